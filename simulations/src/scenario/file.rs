//! The scenario file of `flotilla simulate SCENARIO.yaml`.
//!
//! # Where it comes from
//!
//! The format is Navarch's simulator scenario (`pkg/simulator/scenario.go`
//! in Navarch), read exactly as Navarch writes it, so Navarch's functional
//! scenarios and stress scenarios run unchanged:
//!
//! - `name` (required), `description`;
//! - `fleet`: explicit nodes (`id`, `provider`, `region`, `zone`,
//!   `instance_type`, `gpu_count`, `gpu_type`, `labels`);
//! - `events`: a script on virtual time (`at`, `action`, `target`,
//!   `params`), one of nine actions ([`Action`]);
//! - `assertions`: checks at the end (`node_status`, `health_status`,
//!   `node_count`);
//! - `stress`: a generated fleet (`fleet_gen`), chaos (random failures,
//!   cascades, recoveries, scheduled outages, correlated failures), the
//!   run's length, seed and report files.
//!
//! Durations are Go's `time.ParseDuration` strings (`500ms`, `1m30s`,
//! `1.5h`), kept as whole milliseconds, rounded up ([`super::duration`]).
//!
//! # What Flotilla adds
//!
//! Optional top-level keys, absent from Navarch's files:
//!
//! - `pools:` Flotilla pools spelled as in a pools file (either spelling
//!   `flotilla pools validate` accepts). In a simulation every pool runs on
//!   the simulated cloud whatever provider it names; a pool without one
//!   gets `sim`. Without `pools:` the nodes form one pool, [`DEFAULT_POOL`].
//! - `pool:` on a fleet node and on a `fleet_gen` template: the pool it
//!   belongs to (the first pool when absent).
//! - `health_policy:` a health policy file's contents (the default policy
//!   when absent).
//! - `demand:` a simulated job queue per pool feeding its autoscaler, a
//!   step function of time ([`DemandStep`]).
//! - `world:` the simulated cloud's timings ([`World`]).
//!
//! # Why it is strict
//!
//! Navarch's Go decoder skips fields it does not know, so a misspelt
//! `scop:` silently runs a different experiment than the one written.
//! Here an unknown field anywhere is an error naming it with its full path
//! (`stress.chaos.cascading.scop: unknown field ...`), every closed set of
//! names is an enum whose error lists the allowed values, and after
//! parsing [`Scenario::from_yaml`] checks what serde cannot (references
//! between sections, time order, ranges), again naming the field:
//! `events[3].target: "node-9" is not a node in fleet`.
//!
//! Two deliberate readings of Navarch's loose spots:
//! - a bare number as a duration is an error except `0` (as in Go);
//! - a `node_count` assertion's bare number (`expected: "3000"`) means "at
//!   least" in a stress scenario (Navarch's stress files use it as the
//!   availability to keep) and "exactly" otherwise ([`CountCheck`]).

use super::duration;
use flotilla_health::HealthPolicy;
use flotilla_messages::fleet::{PoolConfig, PoolsFile, BUILTIN_PROVIDERS};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The pool every node belongs to when a scenario has no `pools:`.
pub const DEFAULT_POOL: &str = "fleet";

/// Navarch's cascade depth when `max_depth` is absent or not positive.
pub const DEFAULT_CASCADE_DEPTH: u32 = 3;

/// The failure type names, for messages.
const FAILURE_TYPES: &str =
    "xid_error, temperature, memory_error, nvlink_error, nvml_failure, backend_error, boot_failure, network";

/// What is wrong with a scenario file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScenarioError {
    /// The field at fault, e.g. `events[3].target` (`(file)` for the whole file).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ScenarioError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ScenarioError {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn fail<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::new(path, message))
}

/// A parsed and validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it tests.
    pub description: String,
    /// Explicitly listed nodes (may be empty with a generated fleet).
    pub fleet: Vec<NodeSpec>,
    /// The script, in time order.
    pub events: Vec<Event>,
    /// Checks at the end of the run.
    pub assertions: Vec<Assertion>,
    /// Stress mode: a generated fleet and chaos.
    pub stress: Option<StressConfig>,
    /// Flotilla pools; empty when the file has none (one pool, [`DEFAULT_POOL`]).
    pub pools: Vec<PoolConfig>,
    /// The health policy the simulated agents apply.
    pub health_policy: HealthPolicy,
    /// Simulated demand by pool name, each in time order.
    pub demand: BTreeMap<String, Vec<DemandStep>>,
    /// The simulated cloud's timings.
    pub world: World,
}

/// A node of an explicit fleet.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSpec {
    /// Its id, unique in the fleet.
    pub id: String,
    /// The cloud it pretends to run on.
    pub provider: String,
    /// Its region.
    pub region: String,
    /// Its zone.
    pub zone: String,
    /// Its instance type.
    pub instance_type: String,
    /// GPUs on the node.
    pub gpu_count: u32,
    /// The GPU model.
    pub gpu_type: String,
    /// Node labels.
    #[serde(deserialize_with = "text::map")]
    pub labels: BTreeMap<String, String>,
    /// Flotilla: the pool it belongs to (the first pool when absent).
    pub pool: Option<String>,
}

/// One step of the script.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When, in milliseconds from the start (YAML `at`, a Go duration; 0
    /// when absent, as in Navarch).
    #[serde(rename = "at", default, deserialize_with = "duration::deserialize")]
    pub at_ms: u64,
    /// What happens.
    pub action: Action,
    /// The node it applies to.
    #[serde(default)]
    pub target: Option<String>,
    /// The action's parameters.
    #[serde(default, deserialize_with = "null_as_default")]
    pub params: EventParams,
}

/// What an event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Boot the fleet.
    StartFleet,
    /// Shut the fleet down.
    StopFleet,
    /// Make `target` fail (`params.failure_type`, `xid_code`, `gpu_index`).
    InjectFailure,
    /// Clear `target`'s failures (of `params.failure_type` when given).
    RecoverFailure,
    /// Send `target` a command (`params.command_type`).
    IssueCommand,
    /// Wait until `target` has `params.expected_status`, at most `params.timeout`.
    WaitForStatus,
    /// Do nothing (lets time pass).
    Wait,
    /// Write `params.log_message` to the run's log.
    Log,
    /// Check now that `target` has `params.expected_status`.
    Assert,
}

/// An event's parameters; which ones an action needs is checked after parsing.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventParams {
    /// `inject_failure`, `recover_failure`: the kind of failure.
    pub failure_type: Option<FailureType>,
    /// `inject_failure` of an `xid_error`: the XID code (> 0).
    pub xid_code: Option<u32>,
    /// `inject_failure`: the GPU (all GPUs' node when absent).
    pub gpu_index: Option<u32>,
    /// `inject_failure`: the failure's message.
    pub message: Option<String>,
    /// `issue_command`: the command.
    pub command_type: Option<CommandType>,
    /// `issue_command`: its arguments.
    #[serde(deserialize_with = "text::map")]
    pub command_args: BTreeMap<String, String>,
    /// `wait_for_status`, `assert`: the status awaited.
    pub expected_status: Option<NodeStatusName>,
    /// `wait_for_status`: how long to wait, in milliseconds (0: not given).
    #[serde(rename = "timeout", deserialize_with = "duration::deserialize")]
    pub timeout_ms: u64,
    /// `log`: the line to write.
    pub log_message: Option<String>,
}

/// A kind of failure, injected by an event or by chaos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// An NVIDIA XID error (with a code).
    XidError,
    /// A GPU running hot.
    Temperature,
    /// ECC or other memory errors.
    MemoryError,
    /// An NVLink fault.
    NvlinkError,
    /// NVML stops answering.
    NvmlFailure,
    /// The node's health backend fails.
    BackendError,
    /// The node does not come up.
    BootFailure,
    /// The node loses the network (heartbeats stop).
    Network,
}

/// A command an `issue_command` event sends. Navarch's `run_diagnostic` is
/// refused: Flotilla has no diagnostics command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// Stop scheduling onto the node.
    Cordon,
    /// Undo a cordon.
    Uncordon,
    /// Cordon and move workloads off.
    Drain,
    /// Take the node out of the pool.
    Terminate,
}

impl CommandType {
    fn from_name(name: &str) -> Result<Self, String> {
        Ok(match name {
            "cordon" => CommandType::Cordon,
            "uncordon" => CommandType::Uncordon,
            "drain" => CommandType::Drain,
            "terminate" => CommandType::Terminate,
            "run_diagnostic" => {
                return Err("`run_diagnostic` is not supported: Flotilla has no diagnostics \
                            command (use cordon, uncordon, drain or terminate)"
                    .into())
            }
            other => {
                return Err(format!(
                    "unknown variant `{other}`, expected one of `cordon`, `uncordon`, `drain`, `terminate`"
                ))
            }
        })
    }
}

impl<'de> Deserialize<'de> for CommandType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        CommandType::from_name(&name).map_err(de::Error::custom)
    }
}

/// A node status a scenario can wait for or assert (Navarch's node states
/// and health verdicts, lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatusName {
    /// Serving.
    Active,
    /// Serving with a degraded health verdict.
    Degraded,
    /// Cordoned: no new work.
    Cordoned,
    /// Being drained.
    Draining,
    /// Being terminated.
    Terminating,
    /// Gone.
    Terminated,
    /// Failed (provisioning or registration).
    Failed,
    /// Being created by the cloud.
    Provisioning,
    /// Created, waiting for its agent to register.
    Registering,
    /// Health verdict unhealthy (Navarch's `UNHEALTHY` node status).
    Unhealthy,
    /// Health verdict healthy.
    Healthy,
}

/// A health verdict a `health_status` assertion expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthName {
    /// No problem.
    Healthy,
    /// Still serving, investigate.
    Degraded,
    /// To be taken out.
    Unhealthy,
}

/// The kinds of assertion (YAML `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssertionType {
    /// A node's status.
    NodeStatus,
    /// A node's health verdict.
    HealthStatus,
    /// How many nodes are up (in the fleet or a pool).
    NodeCount,
    /// A pool's circuit breaker (Flotilla's addition): `open` or `closed`
    /// at the end, or `tripped` at some point of the run.
    CircuitBreaker,
}

/// What a `circuit_breaker` assertion expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerName {
    /// Open at the end.
    Open,
    /// Closed at the end.
    Closed,
    /// Tripped at least once during the run.
    Tripped,
}

/// A check at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    /// A node id, `all`, or a pool name.
    pub target: String,
    /// What must hold; its variant is the assertion's type.
    pub expected: Expected,
}

impl Assertion {
    /// The assertion's type, as the file wrote it.
    pub fn kind(&self) -> AssertionType {
        match self.expected {
            Expected::NodeStatus(_) => AssertionType::NodeStatus,
            Expected::Health(_) => AssertionType::HealthStatus,
            Expected::Count(_) => AssertionType::NodeCount,
            Expected::Breaker(_) => AssertionType::CircuitBreaker,
        }
    }
}

/// What an assertion expects, parsed from its `expected` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// `node_status`: the node has this status.
    NodeStatus(NodeStatusName),
    /// `health_status`: the node has this verdict.
    Health(HealthName),
    /// `node_count`: the number of nodes up passes this check.
    Count(CountCheck),
    /// `circuit_breaker`: the pool's breaker is in this state.
    Breaker(BreakerName),
}

/// A comparison of a node count, written `>= 3000`, `<= 10`, `> 0`, `< 5`,
/// `= 8` or a bare number (see [`CountCheck::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountCheck {
    /// `>= n`.
    AtLeast(u64),
    /// `<= n`.
    AtMost(u64),
    /// `= n`.
    Exactly(u64),
    /// `> n`.
    More(u64),
    /// `< n`.
    Less(u64),
}

/// Builds a [`CountCheck`] from its number.
type MakeCheck = fn(u64) -> CountCheck;

impl CountCheck {
    /// Parses a count check. A bare number means [`CountCheck::AtLeast`]
    /// when `bare_means_at_least` (stress scenarios: Navarch writes the
    /// availability to keep) and [`CountCheck::Exactly`] otherwise.
    pub fn parse(text: &str, bare_means_at_least: bool) -> Result<Self, String> {
        // Two-character operators first, so `>=` is not read as `>`.
        const OPERATORS: [(&str, MakeCheck); 5] = [
            (">=", CountCheck::AtLeast),
            ("<=", CountCheck::AtMost),
            (">", CountCheck::More),
            ("<", CountCheck::Less),
            ("=", CountCheck::Exactly),
        ];
        let trimmed = text.trim();
        let bare: MakeCheck = if bare_means_at_least {
            CountCheck::AtLeast
        } else {
            CountCheck::Exactly
        };
        let (make, number) = OPERATORS
            .iter()
            .find_map(|(op, make)| Some((*make, trimmed.strip_prefix(op)?)))
            .unwrap_or((bare, trimmed));
        let n = number.trim().parse::<u64>().map_err(|_| {
            format!("{text:?} is not a node count: write e.g. \"3000\", \">= 3000\" or \"< 10\"")
        })?;
        Ok(make(n))
    }

    /// Whether `n` nodes pass.
    pub fn holds(&self, n: u64) -> bool {
        match *self {
            CountCheck::AtLeast(k) => n >= k,
            CountCheck::AtMost(k) => n <= k,
            CountCheck::Exactly(k) => n == k,
            CountCheck::More(k) => n > k,
            CountCheck::Less(k) => n < k,
        }
    }
}

impl fmt::Display for CountCheck {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (op, n) = match *self {
            CountCheck::AtLeast(n) => (">=", n),
            CountCheck::AtMost(n) => ("<=", n),
            CountCheck::Exactly(n) => ("=", n),
            CountCheck::More(n) => (">", n),
            CountCheck::Less(n) => ("<", n),
        };
        write!(f, "{op} {n}")
    }
}

/// Stress mode (Navarch's `stress:`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StressConfig {
    /// The run's length in milliseconds (0: from the events).
    #[serde(rename = "duration", deserialize_with = "duration::deserialize")]
    pub duration_ms: u64,
    /// How often metrics are sampled, in milliseconds (0: the runner's default).
    #[serde(
        rename = "metrics_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub metrics_interval_ms: u64,
    /// The random seed. Navarch draws one from the clock for 0; Flotilla
    /// runs are always reproducible, so 0 is just seed 0.
    pub seed: u64,
    /// Where to write the JSON report.
    pub report_file: Option<String>,
    /// Where to write the HTML report.
    pub html_report_file: Option<String>,
    /// Where to write the verbose log.
    pub log_file: Option<String>,
    /// A generated fleet.
    pub fleet_gen: Option<FleetGenConfig>,
    /// Random failures.
    pub chaos: Option<ChaosConfig>,
}

/// How to generate a fleet (`stress.fleet_gen`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetGenConfig {
    /// How many nodes.
    pub total_nodes: u32,
    /// Node shapes, picked by weight.
    pub templates: Vec<NodeTemplate>,
    /// Provider name → weight.
    pub providers: BTreeMap<String, u32>,
    /// Region name → weight.
    pub regions: BTreeMap<String, u32>,
    /// Region → its zones.
    pub zones: BTreeMap<String, Vec<String>>,
    /// How the nodes come up.
    pub startup: StartupConfig,
}

/// A node shape of a generated fleet.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeTemplate {
    /// Its name (part of generated node ids).
    pub name: String,
    /// Relative frequency (> 0).
    pub weight: u32,
    /// GPUs per node (> 0).
    pub gpu_count: u32,
    /// The GPU model.
    pub gpu_type: String,
    /// The instance type.
    pub instance_type: String,
    /// Cost of one node-hour, for the report.
    pub price_per_hour: Option<f64>,
    /// Labels of its nodes.
    #[serde(deserialize_with = "text::map")]
    pub labels: BTreeMap<String, String>,
    /// Flotilla: the pool its nodes belong to (the first pool when absent).
    pub pool: Option<String>,
}

/// How a generated fleet comes up (`fleet_gen.startup`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StartupConfig {
    /// The arrival pattern.
    pub pattern: StartupPattern,
    /// Over how long, in milliseconds.
    #[serde(rename = "duration", deserialize_with = "duration::deserialize")]
    pub duration_ms: u64,
    /// Nodes per wave (`wave`).
    pub batch_size: u32,
    /// Random spread of arrival times, percent (0..=100).
    pub jitter_percent: u32,
    /// Shortest boot, in milliseconds.
    #[serde(rename = "cold_start_min", deserialize_with = "duration::deserialize")]
    pub cold_start_min_ms: u64,
    /// Longest boot, in milliseconds (0: unbounded).
    #[serde(rename = "cold_start_max", deserialize_with = "duration::deserialize")]
    pub cold_start_max_ms: u64,
    /// Mean boot, in milliseconds.
    #[serde(rename = "cold_start_mean", deserialize_with = "duration::deserialize")]
    pub cold_start_mean_ms: u64,
    /// Standard deviation of boots, in milliseconds.
    #[serde(
        rename = "cold_start_stddev",
        deserialize_with = "duration::deserialize"
    )]
    pub cold_start_stddev_ms: u64,
}

/// How nodes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartupPattern {
    /// All at once (Navarch's default).
    #[default]
    Instant,
    /// Evenly over the duration.
    Linear,
    /// Slowly, then faster.
    Exponential,
    /// In batches of `batch_size`.
    Wave,
}

/// Random failures (`stress.chaos`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosConfig {
    /// Whether chaos runs at all.
    pub enabled: bool,
    /// Failures per minute per 1,000 nodes (>= 0).
    pub failure_rate: f64,
    /// XID code → weight, for `xid_error` failures (a built-in mix when empty).
    pub xid_distribution: BTreeMap<u32, u32>,
    /// Failure kinds by weight (`xid_error` only when empty).
    pub failure_types: Vec<FailureTypeWeight>,
    /// Failures that spread.
    pub cascading: Option<CascadingConfig>,
    /// Failures that heal by themselves.
    pub recovery: Option<RecoveryConfig>,
    /// Planned outages.
    pub scheduled_outages: Vec<ScheduledOutage>,
    /// Failures that follow others.
    pub correlated_failures: Vec<CorrelatedFailure>,
}

/// A failure kind and its weight.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureTypeWeight {
    /// The kind.
    #[serde(rename = "type")]
    pub failure_type: FailureType,
    /// Its relative frequency.
    #[serde(default)]
    pub weight: u32,
}

/// How failures spread (`chaos.cascading`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadingConfig {
    /// Whether failures cascade.
    pub enabled: bool,
    /// Chance (0..=1) that a failure spreads.
    pub probability: f64,
    /// Longest chain; Navarch's 3 when absent or not positive.
    #[serde(deserialize_with = "cascade_depth")]
    pub max_depth: u32,
    /// Shortest delay before a cascade, in milliseconds.
    #[serde(rename = "min_delay", deserialize_with = "duration::deserialize")]
    pub min_delay_ms: u64,
    /// Longest delay, in milliseconds (>= the shortest).
    #[serde(rename = "max_delay", deserialize_with = "duration::deserialize")]
    pub max_delay_ms: u64,
    /// Which nodes a cascade can reach.
    pub scope: CascadeScope,
    /// Largest share (a fraction 0..=1, 0.2 = 20%) of the scope affected.
    pub max_affected_percent: f64,
}

impl Default for CascadingConfig {
    fn default() -> Self {
        CascadingConfig {
            enabled: false,
            probability: 0.0,
            max_depth: DEFAULT_CASCADE_DEPTH,
            min_delay_ms: 0,
            max_delay_ms: 0,
            scope: CascadeScope::default(),
            max_affected_percent: 0.0,
        }
    }
}

/// Where a cascade spreads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CascadeScope {
    /// The same rack.
    Rack,
    /// The same zone.
    Zone,
    /// The same region.
    Region,
    /// The same provider.
    Provider,
    /// Anywhere (Navarch's behaviour when the scope is absent).
    #[default]
    Random,
}

/// Failures that heal by themselves (`chaos.recovery`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Whether failures heal.
    pub enabled: bool,
    /// Chance (0..=1) that a non-fatal failure heals.
    pub probability: f64,
    /// Mean time to heal, in milliseconds.
    #[serde(rename = "mean_time", deserialize_with = "duration::deserialize")]
    pub mean_time_ms: u64,
    /// Its standard deviation, in milliseconds.
    #[serde(rename = "std_dev", deserialize_with = "duration::deserialize")]
    pub std_dev_ms: u64,
    /// Replace nodes with fatal failures.
    pub replace_fatal: bool,
    /// How long a replacement takes to boot, in milliseconds.
    #[serde(
        rename = "replace_cold_start",
        deserialize_with = "duration::deserialize"
    )]
    pub replace_cold_start_ms: u64,
}

/// A planned outage (`chaos.scheduled_outages[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledOutage {
    /// Its name, for the report.
    #[serde(default)]
    pub name: String,
    /// When it starts, in milliseconds.
    #[serde(
        rename = "start_time",
        default,
        deserialize_with = "duration::deserialize"
    )]
    pub start_time_ms: u64,
    /// How long it lasts, in milliseconds.
    #[serde(
        rename = "duration",
        default,
        deserialize_with = "duration::deserialize"
    )]
    pub duration_ms: u64,
    /// What it hits.
    pub scope: OutageScope,
    /// The zone, region or provider name; for `percentage`, the share
    /// of nodes (0..=100).
    #[serde(default, deserialize_with = "text::string")]
    pub target: String,
    /// The failure its nodes get.
    pub failure_type: FailureType,
}

/// What an outage hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageScope {
    /// One zone.
    Zone,
    /// One region.
    Region,
    /// One provider.
    Provider,
    /// A random share of all nodes.
    Percentage,
}

/// A failure that follows another (`chaos.correlated_failures[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelatedFailure {
    /// Its name, for the report.
    #[serde(default)]
    pub name: String,
    /// What sets it off.
    pub trigger: CorrelationTrigger,
    /// The failure that follows.
    pub response: FailureType,
    /// Chance (0..=1) that it follows.
    #[serde(default)]
    pub probability: f64,
    /// After how long, in milliseconds.
    #[serde(rename = "delay", default, deserialize_with = "duration::deserialize")]
    pub delay_ms: u64,
    /// Which nodes it hits.
    pub scope: CorrelatedScope,
}

/// What sets off a correlated failure: an XID code (`"74"`) or a failure type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorrelationTrigger {
    /// An `xid_error` with this code.
    Xid(u32),
    /// Any failure of this type.
    Failure(FailureType),
}

impl CorrelationTrigger {
    fn parse(text: &str) -> Result<Self, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(code) if code > 0 => Ok(CorrelationTrigger::Xid(code)),
                _ => Err(format!("{text:?} is not an XID code (1 or more)")),
            };
        }
        parse_name(text).map(CorrelationTrigger::Failure).map_err(|_| {
            format!("{text:?} is neither an XID code (e.g. \"74\") nor a failure type ({FAILURE_TYPES})")
        })
    }
}

impl<'de> Deserialize<'de> for CorrelationTrigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = text::string(d)?;
        CorrelationTrigger::parse(&text).map_err(de::Error::custom)
    }
}

/// Which nodes a correlated failure hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelatedScope {
    /// The node that failed.
    SameNode,
    /// A node in its rack.
    SameRack,
    /// A node in its zone.
    SameZone,
    /// Any node.
    Random,
}

/// Flotilla: the simulated queue of one pool from time `at` on, feeding its
/// autoscaler. The latest step at or before now applies; an absent field
/// keeps its previous value (0 before any).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandStep {
    /// From when, in milliseconds.
    #[serde(rename = "at", deserialize_with = "duration::deserialize")]
    pub at_ms: u64,
    /// Jobs waiting.
    #[serde(default)]
    pub pending: Option<u64>,
    /// Jobs running.
    #[serde(default)]
    pub running: Option<u64>,
    /// Mean GPU utilisation, percent (0..=100).
    #[serde(default)]
    pub utilization: Option<f64>,
}

/// Flotilla: the simulated cloud's timings (`world:`), all in milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct World {
    /// The simulation's time step (> 0; default 10s).
    #[serde(rename = "step", deserialize_with = "duration::deserialize")]
    pub step_ms: u64,
    /// From a provisioning request to a running instance (default 60s).
    #[serde(rename = "provision_time", deserialize_with = "duration::deserialize")]
    pub provision_time_ms: u64,
    /// From a running instance to its agent registering (default 30s).
    #[serde(rename = "boot_time", deserialize_with = "duration::deserialize")]
    pub boot_time_ms: u64,
    /// How long draining a node takes (default 30s).
    #[serde(rename = "drain_time", deserialize_with = "duration::deserialize")]
    pub drain_time_ms: u64,
    /// How long terminating an instance takes (default 10s).
    #[serde(rename = "terminate_time", deserialize_with = "duration::deserialize")]
    pub terminate_time_ms: u64,
    /// Chance (0..=1) that a provisioning fails (default 0).
    pub provision_failure_rate: f64,
}

impl Default for World {
    fn default() -> Self {
        World {
            step_ms: 10_000,
            provision_time_ms: 60_000,
            boot_time_ms: 30_000,
            drain_time_ms: 30_000,
            terminate_time_ms: 10_000,
            provision_failure_rate: 0.0,
        }
    }
}

impl Scenario {
    /// Parses and validates a scenario file; the error names the field.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
                .map_err(serde_error)?;
        let scenario = file.into_scenario()?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The random seed (`stress.seed`, else 0).
    pub fn seed(&self) -> u64 {
        self.stress.as_ref().map_or(0, |s| s.seed)
    }

    /// Whether this is a stress scenario (it has `stress:`).
    pub fn is_stress(&self) -> bool {
        self.stress.is_some()
    }

    /// How long the run lasts, in milliseconds: `stress.duration` when
    /// given, else until the last event ends (its `at` plus its `timeout`,
    /// the latest over all events); at least 1 ms.
    pub fn duration_ms(&self) -> u64 {
        let stress = self.stress.as_ref().map_or(0, |s| s.duration_ms);
        if stress > 0 {
            return stress;
        }
        let last_end = self
            .events
            .iter()
            .map(|e| e.at_ms.saturating_add(e.params.timeout_ms));
        last_end.max().unwrap_or(0).max(1)
    }

    /// How many nodes `stress.fleet_gen` generates (0 without one).
    pub fn generated_nodes(&self) -> u32 {
        self.fleet_gen().map_or(0, |g| g.total_nodes)
    }

    /// The pool a node or template with `pool` belongs to: that pool, else
    /// the first pool, else [`DEFAULT_POOL`].
    pub fn pool_name<'a>(&'a self, pool: Option<&'a str>) -> &'a str {
        pool.or_else(|| self.pools.first().map(|p| p.name.as_str()))
            .unwrap_or(DEFAULT_POOL)
    }

    /// The demand step of `pool` in force at `now_ms`, if any.
    pub fn demand_at(&self, pool: &str, now_ms: u64) -> Option<&DemandStep> {
        let steps = self.demand.get(pool)?;
        let started = steps.partition_point(|s| s.at_ms <= now_ms);
        started.checked_sub(1).map(|i| &steps[i])
    }

    fn fleet_gen(&self) -> Option<&FleetGenConfig> {
        self.stress.as_ref()?.fleet_gen.as_ref()
    }
}

// ---------------------------------------------------------------------------
// The file as written, before the parts that need context are parsed.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default, deserialize_with = "null_as_default")]
    fleet: Vec<NodeSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    events: Vec<Event>,
    #[serde(default, deserialize_with = "null_as_default")]
    assertions: Vec<AssertionWire>,
    #[serde(default)]
    stress: Option<StressConfig>,
    #[serde(default)]
    pools: Option<Value>,
    #[serde(default)]
    health_policy: Option<Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    demand: BTreeMap<String, Vec<DemandStep>>,
    #[serde(default, deserialize_with = "null_as_default")]
    world: World,
}

/// An assertion as written: what `expected` means depends on `type` and on
/// whether the scenario is a stress scenario.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionWire {
    #[serde(rename = "type")]
    kind: AssertionType,
    #[serde(default, deserialize_with = "text::string")]
    target: String,
    #[serde(deserialize_with = "text::string")]
    expected: String,
}

impl ScenarioFile {
    fn into_scenario(self) -> Result<Scenario, ScenarioError> {
        let stress = self.stress.is_some();
        let assertions = self
            .assertions
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.parse(stress, &format!("assertions[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Scenario {
            name: self.name,
            description: self.description,
            fleet: self.fleet,
            events: self.events,
            assertions,
            stress: self.stress,
            pools: self.pools.map(parse_pools).transpose()?.unwrap_or_default(),
            health_policy: self
                .health_policy
                .map(parse_health_policy)
                .transpose()?
                .unwrap_or_default(),
            demand: self.demand,
            world: self.world,
        })
    }
}

impl AssertionWire {
    fn parse(self, stress: bool, path: &str) -> Result<Assertion, ScenarioError> {
        let text = self.expected.trim();
        let expected = match self.kind {
            AssertionType::NodeStatus => parse_name(text).map(Expected::NodeStatus),
            AssertionType::HealthStatus => parse_name(text).map(Expected::Health),
            AssertionType::NodeCount => CountCheck::parse(text, stress).map(Expected::Count),
            AssertionType::CircuitBreaker => parse_name(text).map(Expected::Breaker),
        }
        .map_err(|message| ScenarioError::new(format!("{path}.expected"), message))?;
        let target = match (self.kind, self.target.trim()) {
            (AssertionType::NodeCount | AssertionType::CircuitBreaker, "") => "all".to_string(),
            (_, target) => target.to_string(),
        };
        Ok(Assertion { target, expected })
    }
}

/// A closed-set name through serde, so its error lists the allowed names.
fn parse_name<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    T::deserialize(de::value::StrDeserializer::<de::value::Error>::new(text))
        .map_err(|e| e.to_string())
}

fn serde_error(e: serde_path_to_error::Error<serde_yaml::Error>) -> ScenarioError {
    // Map keys that are not strings (XID codes) show as `?`: leave them out.
    let path = e.path().to_string().replace(".?", "");
    let path = if path == "." {
        "(file)".to_string()
    } else {
        path
    };
    let message = e.into_inner().to_string();
    ScenarioError::new(&path, without_path(&path, &message))
}

/// serde_yaml starts its messages with its own path (the field's parent
/// for an unknown field); the error's path says it already.
fn without_path(path: &str, message: &str) -> String {
    match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && path.starts_with(prefix) => rest.to_string(),
        _ => message.to_string(),
    }
}

/// Joins a section's name and a path inside it.
fn nested(base: &str, inner: &str) -> String {
    match inner {
        "" | "." => base.to_string(),
        _ => format!("{base}.{inner}"),
    }
}

/// Parses `pools:` with the pools file's own parser, so the spelling and
/// its validation are the same as `flotilla pools validate`'s.
fn parse_pools(mut pools: Value) -> Result<Vec<PoolConfig>, ScenarioError> {
    let providers = simulate_providers(&mut pools);
    let mut file = Mapping::new();
    file.insert("pools".into(), pools);
    if !providers.is_empty() {
        file.insert("providers".into(), Value::Mapping(providers));
    }
    let text =
        serde_yaml::to_string(&file).map_err(|e| ScenarioError::new("pools", e.to_string()))?;
    let parsed = PoolsFile::from_yaml(&text).map_err(|e| {
        // Its paths already start with `pools`; anything else is ours.
        let path = if e.path.starts_with("pools") {
            e.path
        } else {
            "pools".into()
        };
        ScenarioError::new(path, e.message)
    })?;
    if parsed.pools.is_empty() {
        return fail(
            "pools",
            format!("no pools: define at least one, or leave `pools:` out for one pool, {DEFAULT_POOL:?}"),
        );
    }
    Ok(parsed.pools)
}

/// Every pool of a simulation runs on the simulated cloud: a pool without a
/// provider gets `sim`, and every provider a pool names is defined as a
/// simulated one, so pools written for a real cloud run unchanged.
/// Returns the provider definitions to add.
fn simulate_providers(pools: &mut Value) -> Mapping {
    let entries: Vec<&mut Value> = match pools {
        Value::Sequence(items) => items.iter_mut().collect(),
        Value::Mapping(by_name) => by_name.values_mut().collect(),
        _ => Vec::new(),
    };
    let mut providers = Mapping::new();
    for pool in entries {
        let Value::Mapping(pool) = pool else { continue };
        if !pool.contains_key("provider") && !pool.contains_key("providers") {
            pool.insert("provider".into(), "sim".into());
        }
        for name in provider_names(pool) {
            if !BUILTIN_PROVIDERS.contains(&name.as_str()) {
                let mut sim = Mapping::new();
                sim.insert("type".into(), "sim".into());
                providers.insert(name.into(), Value::Mapping(sim));
            }
        }
    }
    providers
}

fn provider_names(pool: &Mapping) -> Vec<String> {
    let single = pool.get("provider").and_then(Value::as_str);
    let listed = pool
        .get("providers")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("name")?.as_str());
    single
        .into_iter()
        .chain(listed)
        .map(str::to_string)
        .collect()
}

/// Parses `health_policy:` with the policy file's own parser.
fn parse_health_policy(policy: Value) -> Result<HealthPolicy, ScenarioError> {
    let text = serde_yaml::to_string(&policy)
        .map_err(|e| ScenarioError::new("health_policy", e.to_string()))?;
    HealthPolicy::from_yaml(&text).map_err(|e| {
        // Its line numbers count lines of the re-serialized text, not the file's.
        let message = without_path(&e.path, &e.message);
        let message = message.split(" at line ").next().unwrap_or_default();
        ScenarioError::new(nested("health_policy", &e.path), message)
    })
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn cascade_depth<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let depth = i64::deserialize(d)?;
    Ok(match depth {
        ..=0 => DEFAULT_CASCADE_DEPTH,
        _ => u32::try_from(depth).unwrap_or(u32::MAX),
    })
}

/// Go's YAML decoder reads any scalar into a string field (`expected:
/// 3000`, `version: 2` among labels); these read the same way.
mod text {
    use serde::de::{self, Deserialize, Deserializer, Visitor};
    use std::collections::BTreeMap;
    use std::fmt;

    pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }

    pub(super) fn map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let map: Option<BTreeMap<String, Scalar>> = Option::deserialize(d)?;
        Ok(map
            .unwrap_or_default()
            .into_iter()
            .map(|(k, Scalar(v))| (k, v))
            .collect())
    }

    struct Scalar(String);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            string(d).map(Scalar)
        }
    }

    struct ScalarVisitor;

    impl Visitor<'_> for ScalarVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
}

// ---------------------------------------------------------------------------
// Validation: what serde cannot check.

impl Scenario {
    fn validate(&self) -> Result<(), ScenarioError> {
        if self.name.trim().is_empty() {
            return fail("name", "required: give the scenario a name");
        }
        self.check_fleet()?;
        if let Some(stress) = &self.stress {
            self.check_stress(stress)?;
        }
        self.check_events()?;
        self.check_assertions()?;
        self.check_demand()?;
        self.world.check()
    }

    fn check_fleet(&self) -> Result<(), ScenarioError> {
        if self.fleet.is_empty() && self.generated_nodes() == 0 {
            let path = match self.fleet_gen() {
                Some(_) => "stress.fleet_gen.total_nodes",
                None => "fleet",
            };
            return fail(
                path,
                "the scenario has no nodes: list them under `fleet:` or set stress.fleet_gen.total_nodes > 0",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, node) in self.fleet.iter().enumerate() {
            if node.id.trim().is_empty() {
                return fail(format!("fleet[{i}].id"), "required: every node needs an id");
            }
            if !seen.insert(node.id.as_str()) {
                return fail(
                    format!("fleet[{i}].id"),
                    format!("duplicate node id {:?}", node.id),
                );
            }
            self.check_pool_ref(&format!("fleet[{i}].pool"), node.pool.as_deref())?;
        }
        Ok(())
    }

    /// A pool named on a node, a template or demand must exist: one of
    /// `pools:`, or [`DEFAULT_POOL`] when there are none.
    fn check_pool_ref(&self, path: &str, pool: Option<&str>) -> Result<(), ScenarioError> {
        let Some(pool) = pool else { return Ok(()) };
        if self.pools.is_empty() {
            return match pool {
                DEFAULT_POOL => Ok(()),
                _ => fail(
                    path,
                    format!("{pool:?} is not a pool: the scenario has no `pools:`, so every node is in {DEFAULT_POOL:?}"),
                ),
            };
        }
        if self.pools.iter().any(|p| p.name == pool) {
            return Ok(());
        }
        let names = listing(self.pools.iter().map(|p| p.name.as_str()));
        fail(path, format!("{pool:?} is not a pool (pools: {names})"))
    }

    fn check_stress(&self, stress: &StressConfig) -> Result<(), ScenarioError> {
        if let Some(generator) = stress.fleet_gen.as_ref().filter(|g| g.total_nodes > 0) {
            self.check_fleet_gen(generator)?;
        }
        match &stress.chaos {
            Some(chaos) => check_chaos(chaos),
            None => Ok(()),
        }
    }

    fn check_fleet_gen(&self, generator: &FleetGenConfig) -> Result<(), ScenarioError> {
        const BASE: &str = "stress.fleet_gen";
        if generator.templates.is_empty() {
            return fail(
                format!("{BASE}.templates"),
                "at least one template is required",
            );
        }
        for (i, template) in generator.templates.iter().enumerate() {
            let path = format!("{BASE}.templates[{i}]");
            check_template(&path, template)?;
            self.check_pool_ref(&format!("{path}.pool"), template.pool.as_deref())?;
        }
        check_weights(&format!("{BASE}.providers"), &generator.providers)?;
        check_weights(&format!("{BASE}.regions"), &generator.regions)?;
        if !generator.regions.is_empty() {
            if let Some(region) = generator
                .zones
                .keys()
                .find(|r| !generator.regions.contains_key(*r))
            {
                let regions = listing(generator.regions.keys().map(String::as_str));
                return fail(
                    format!("{BASE}.zones.{region}"),
                    format!("{region:?} is not one of the regions (regions: {regions})"),
                );
            }
        }
        check_startup(&generator.startup)
    }

    fn check_events(&self) -> Result<(), ScenarioError> {
        let nodes = self.checkable_node_ids();
        let mut previous_at = 0;
        for (i, event) in self.events.iter().enumerate() {
            let path = format!("events[{i}]");
            if event.at_ms < previous_at {
                return fail(
                    format!("{path}.at"),
                    format!(
                        "{} is before the previous event's {}: events must be in time order",
                        duration::format_millis(event.at_ms),
                        duration::format_millis(previous_at)
                    ),
                );
            }
            previous_at = event.at_ms;
            check_event(&path, event)?;
            if let (Some(nodes), Some(target)) = (&nodes, &event.target) {
                if !nodes.contains(target.as_str()) {
                    return fail(format!("{path}.target"), not_a_node(target, nodes));
                }
            }
        }
        Ok(())
    }

    /// The node ids targets must name, when they are all known: an explicit
    /// fleet and no generated one (the runner names generated nodes).
    fn checkable_node_ids(&self) -> Option<BTreeSet<&str>> {
        let known = !self.fleet.is_empty() && self.generated_nodes() == 0;
        known.then(|| self.fleet.iter().map(|n| n.id.as_str()).collect())
    }

    fn check_assertions(&self) -> Result<(), ScenarioError> {
        let nodes = self.checkable_node_ids();
        for (i, assertion) in self.assertions.iter().enumerate() {
            let path = format!("assertions[{i}].target");
            let target = assertion.target.as_str();
            if target == "all" || self.is_pool(target) {
                continue;
            }
            if assertion.kind() == AssertionType::NodeCount {
                return fail(path, format!("{target:?} is neither `all` nor a pool: node_count counts a pool or the whole fleet"));
            }
            if assertion.kind() == AssertionType::CircuitBreaker {
                return fail(
                    path,
                    format!(
                        "{target:?} is neither `all` nor a pool: a circuit breaker is a pool's"
                    ),
                );
            }
            if target.is_empty() {
                return fail(
                    path,
                    format!(
                        "required: which node's status to check ({:?})",
                        assertion.kind()
                    ),
                );
            }
            match &nodes {
                Some(nodes) if !nodes.contains(target) => {
                    return fail(path, not_a_node(target, nodes))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn is_pool(&self, name: &str) -> bool {
        match self.pools.is_empty() {
            true => name == DEFAULT_POOL,
            false => self.pools.iter().any(|p| p.name == name),
        }
    }

    fn check_demand(&self) -> Result<(), ScenarioError> {
        for (pool, steps) in &self.demand {
            let path = format!("demand.{pool}");
            self.check_pool_ref(&path, Some(pool))?;
            let mut previous_at = 0;
            for (i, step) in steps.iter().enumerate() {
                if step.at_ms < previous_at {
                    return fail(
                        format!("{path}[{i}].at"),
                        format!(
                            "{} is before the previous step's {}: steps must be in time order",
                            duration::format_millis(step.at_ms),
                            duration::format_millis(previous_at)
                        ),
                    );
                }
                previous_at = step.at_ms;
                if let Some(u) = step.utilization {
                    check_range(
                        &format!("{path}[{i}].utilization"),
                        u,
                        100.0,
                        "a percentage",
                    )?;
                }
            }
        }
        Ok(())
    }
}

impl World {
    fn check(&self) -> Result<(), ScenarioError> {
        if self.step_ms == 0 {
            return fail("world.step", "must be longer than 0 (e.g. 10s)");
        }
        check_probability("world.provision_failure_rate", self.provision_failure_rate)
    }
}

fn check_template(path: &str, template: &NodeTemplate) -> Result<(), ScenarioError> {
    if template.name.trim().is_empty() {
        return fail(
            format!("{path}.name"),
            "required: every template needs a name",
        );
    }
    if template.weight == 0 {
        return fail(format!("{path}.weight"), "must be at least 1");
    }
    if template.gpu_count == 0 {
        return fail(format!("{path}.gpu_count"), "must be at least 1");
    }
    match template.price_per_hour {
        Some(price) if !(price.is_finite() && price >= 0.0) => fail(
            format!("{path}.price_per_hour"),
            format!("must be >= 0, got {price}"),
        ),
        _ => Ok(()),
    }
}

/// A weight map is either absent (empty) or has a positive total.
fn check_weights<K>(path: &str, weights: &BTreeMap<K, u32>) -> Result<(), ScenarioError> {
    let total: u64 = weights.values().map(|&w| u64::from(w)).sum();
    if !weights.is_empty() && total == 0 {
        return fail(
            path,
            "the weights add up to 0: give at least one a positive weight",
        );
    }
    Ok(())
}

fn check_startup(startup: &StartupConfig) -> Result<(), ScenarioError> {
    const BASE: &str = "stress.fleet_gen.startup";
    if startup.jitter_percent > 100 {
        return fail(
            format!("{BASE}.jitter_percent"),
            format!("must be in 0..=100, got {}", startup.jitter_percent),
        );
    }
    let (min, max) = (startup.cold_start_min_ms, startup.cold_start_max_ms);
    if max > 0 && min > max {
        return fail(
            format!("{BASE}.cold_start_max"),
            format!(
                "{} is below cold_start_min ({})",
                duration::format_millis(max),
                duration::format_millis(min)
            ),
        );
    }
    Ok(())
}

fn check_chaos(chaos: &ChaosConfig) -> Result<(), ScenarioError> {
    const BASE: &str = "stress.chaos";
    let rate = chaos.failure_rate;
    if !(rate.is_finite() && rate >= 0.0) {
        return fail(
            format!("{BASE}.failure_rate"),
            format!("must be >= 0 (failures per minute per 1,000 nodes), got {rate}"),
        );
    }
    if chaos.xid_distribution.contains_key(&0) {
        return fail(format!("{BASE}.xid_distribution.0"), "XID codes start at 1");
    }
    check_weights(&format!("{BASE}.xid_distribution"), &chaos.xid_distribution)?;
    let type_total: u64 = chaos
        .failure_types
        .iter()
        .map(|t| u64::from(t.weight))
        .sum();
    if !chaos.failure_types.is_empty() && type_total == 0 {
        return fail(
            format!("{BASE}.failure_types"),
            "the weights add up to 0: give at least one a positive weight",
        );
    }
    if let Some(cascading) = &chaos.cascading {
        check_cascading(cascading)?;
    }
    if let Some(recovery) = &chaos.recovery {
        check_probability(
            &format!("{BASE}.recovery.probability"),
            recovery.probability,
        )?;
    }
    for (i, outage) in chaos.scheduled_outages.iter().enumerate() {
        check_outage(&format!("{BASE}.scheduled_outages[{i}]"), outage)?;
    }
    for (i, correlated) in chaos.correlated_failures.iter().enumerate() {
        let path = format!("{BASE}.correlated_failures[{i}].probability");
        check_probability(&path, correlated.probability)?;
    }
    Ok(())
}

fn check_cascading(cascading: &CascadingConfig) -> Result<(), ScenarioError> {
    const BASE: &str = "stress.chaos.cascading";
    check_probability(&format!("{BASE}.probability"), cascading.probability)?;
    check_range(
        &format!("{BASE}.max_affected_percent"),
        cascading.max_affected_percent,
        1.0,
        "a fraction (0.2 = 20%)",
    )?;
    let (min, max) = (cascading.min_delay_ms, cascading.max_delay_ms);
    if min > max {
        return fail(
            format!("{BASE}.max_delay"),
            format!(
                "{} is below min_delay ({})",
                duration::format_millis(max),
                duration::format_millis(min)
            ),
        );
    }
    Ok(())
}

fn check_outage(path: &str, outage: &ScheduledOutage) -> Result<(), ScenarioError> {
    let target = outage.target.trim();
    let path = format!("{path}.target");
    match outage.scope {
        OutageScope::Percentage => match target.parse::<f64>() {
            Ok(share) if share.is_finite() && (0.0..=100.0).contains(&share) => Ok(()),
            _ => fail(
                path,
                format!("a percentage outage needs a share of nodes in 0..=100, got {target:?}"),
            ),
        },
        scope if target.is_empty() => fail(
            path,
            format!(
                "required: which {} the outage hits",
                format!("{scope:?}").to_lowercase()
            ),
        ),
        _ => Ok(()),
    }
}

/// Checks what an event's action needs.
fn check_event(path: &str, event: &Event) -> Result<(), ScenarioError> {
    let params = &event.params;
    let param = |name: &str| format!("{path}.params.{name}");
    let needs = |what: &str| format!("required for {}: {what}", action_name(event.action));
    if params.xid_code == Some(0) {
        return fail(param("xid_code"), "XID codes start at 1");
    }
    let target_given = event
        .target
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty());
    let needs_target = !matches!(
        event.action,
        Action::StartFleet | Action::StopFleet | Action::Wait | Action::Log
    );
    if needs_target && !target_given {
        return fail(format!("{path}.target"), needs("the node it applies to"));
    }
    match event.action {
        Action::InjectFailure => match params.failure_type {
            None => fail(param("failure_type"), needs(FAILURE_TYPES)),
            Some(FailureType::XidError) if params.xid_code.is_none() => fail(
                param("xid_code"),
                "required for an xid_error: the XID code (e.g. 79)",
            ),
            Some(_) => Ok(()),
        },
        Action::IssueCommand if params.command_type.is_none() => fail(
            param("command_type"),
            needs("cordon, uncordon, drain or terminate"),
        ),
        Action::WaitForStatus | Action::Assert if params.expected_status.is_none() => fail(
            param("expected_status"),
            needs("the status awaited (e.g. unhealthy)"),
        ),
        Action::WaitForStatus if params.timeout_ms == 0 => {
            fail(param("timeout"), needs("how long to wait (e.g. 30s)"))
        }
        Action::Log if params.log_message.as_deref().is_none_or(str::is_empty) => {
            fail(param("log_message"), needs("the line to write"))
        }
        _ => Ok(()),
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::StartFleet => "start_fleet",
        Action::StopFleet => "stop_fleet",
        Action::InjectFailure => "inject_failure",
        Action::RecoverFailure => "recover_failure",
        Action::IssueCommand => "issue_command",
        Action::WaitForStatus => "wait_for_status",
        Action::Wait => "wait",
        Action::Log => "log",
        Action::Assert => "assert",
    }
}

fn check_probability(path: &str, value: f64) -> Result<(), ScenarioError> {
    check_range(path, value, 1.0, "a probability")
}

/// `value` must be finite and in `0..=max`.
fn check_range(path: &str, value: f64, max: f64, what: &str) -> Result<(), ScenarioError> {
    if value.is_finite() && (0.0..=max).contains(&value) {
        return Ok(());
    }
    fail(path, format!("must be {what} in 0..={max}, got {value}"))
}

fn not_a_node(target: &str, nodes: &BTreeSet<&str>) -> String {
    format!(
        "{target:?} is not a node in `fleet` (nodes: {})",
        listing(nodes.iter().copied())
    )
}

/// Up to eight names, for messages.
fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    const SHOWN: usize = 8;
    let names: Vec<&str> = names.collect();
    let mut text = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", ... ({} in all)", names.len()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_messages::fleet::{AutoscalerConfig, Seconds};

    /// A functional scenario as Navarch writes one: an explicit fleet and
    /// every action once.
    const FUNCTIONAL: &str = r#"
name: ecc-drain-recover
description: A double-bit ECC error on one node, a drain on another.

fleet:
  - id: gpu-a
    provider: gcp
    region: us-central1
    zone: us-central1-b
    instance_type: a3-highgpu-8g
    gpu_count: 8
    gpu_type: "NVIDIA H100 80GB HBM3"
    labels:
      rack: r1
      generation: 3
  - id: gpu-b
    provider: aws
    region: us-east-1
    zone: us-east-1a
    instance_type: p5.48xlarge
    gpu_count: 8
    gpu_type: "NVIDIA H100 80GB HBM3"
  - id: gpu-c
    provider: lambda
    region: us-west-1
    zone: us-west-1a
    instance_type: gpu_8x_a100
    gpu_count: 8
    gpu_type: "NVIDIA A100 80GB"

events:
  - at: 0
    action: start_fleet
  - at: 2s
    action: log
    params:
      log_message: "fleet up"
  - at: 4s
    action: inject_failure
    target: gpu-a
    params:
      failure_type: xid_error
      xid_code: 48
      gpu_index: 2
      message: "Double Bit ECC Error"
  - at: 5s
    action: wait_for_status
    target: gpu-a
    params:
      expected_status: unhealthy
      timeout: 20s
  - at: 6.5s
    action: issue_command
    target: gpu-b
    params:
      command_type: drain
      command_args:
        grace: 30s
        force: true
  - at: 10s
    action: recover_failure
    target: gpu-a
    params:
      failure_type: xid_error
  - at: 1m
    action: wait
  - at: 1m30s
    action: assert
    target: gpu-c
    params:
      expected_status: active
  - at: 2m
    action: stop_fleet

assertions:
  - type: node_status
    target: gpu-c
    expected: active
  - type: health_status
    target: gpu-a
    expected: healthy
  - type: node_count
    target: all
    expected: "3"
"#;

    /// A stress scenario with every field Navarch's stress format has.
    const STRESS: &str = r#"
name: zone-storm
description: |
  Four hundred nodes, a zone outage and NVLink errors that spread.
fleet: []
stress:
  duration: 45m
  metrics_interval: 15s
  seed: 2024
  report_file: zone-storm.json
  html_report_file: zone-storm.html
  log_file: zone-storm.log
  fleet_gen:
    total_nodes: 400
    templates:
      - name: h100x8
        weight: 3
        gpu_count: 8
        gpu_type: "NVIDIA H100 80GB HBM3"
        instance_type: a3-highgpu-8g
        price_per_hour: 29.5
        labels: {tier: premium}
      - name: l4x1
        weight: 1
        gpu_count: 1
        gpu_type: "NVIDIA L4"
        instance_type: g2-standard-8
        price_per_hour: 0.9
    providers: {gcp: 70, aws: 30}
    regions: {europe-west4: 50, us-east1: 50}
    zones:
      europe-west4: [europe-west4-a, europe-west4-b]
      us-east1: [us-east1-c]
    startup:
      pattern: exponential
      duration: 4m
      batch_size: 25
      jitter_percent: 15
      cold_start_min: 20s
      cold_start_max: 3m
      cold_start_mean: 50s
      cold_start_stddev: 12.5s
  chaos:
    enabled: true
    failure_rate: 12.5
    xid_distribution: {31: 5, 48: 2, 74: 3, 79: 1}
    failure_types:
      - {type: xid_error, weight: 50}
      - {type: temperature, weight: 10}
      - {type: memory_error, weight: 5}
      - {type: nvlink_error, weight: 5}
      - {type: nvml_failure, weight: 10}
      - {type: backend_error, weight: 5}
      - {type: boot_failure, weight: 5}
      - {type: network, weight: 10}
    cascading:
      enabled: true
      probability: 0.25
      max_depth: 0
      min_delay: 250ms
      max_delay: 8s
      scope: rack
      max_affected_percent: 0.1
    recovery:
      enabled: true
      probability: 0.7
      mean_time: 6m
      std_dev: 90s
      replace_fatal: true
      replace_cold_start: 2m30s
    scheduled_outages:
      - name: west4-a-dark
        start_time: 10m
        duration: 5m
        scope: zone
        target: europe-west4-a
        failure_type: network
      - name: sample-thermal
        start_time: 30m
        duration: 1m
        scope: percentage
        target: 7.5
        failure_type: temperature
    correlated_failures:
      - name: nvlink-neighbours
        trigger: "74"
        response: nvlink_error
        probability: 0.5
        delay: 1s
        scope: same_rack
      - name: heat-spreads
        trigger: temperature
        response: temperature
        probability: 0.2
        delay: 4s
        scope: same_zone
events:
  - at: 0s
    action: log
    params: {log_message: "storm begins"}
  - at: 44m
    action: log
    params: {log_message: "collecting"}
assertions:
  - type: node_count
    target: all
    expected: "300"
"#;

    /// Flotilla's additions: pools, a health policy, demand and the world.
    const FLOTILLA: &str = r#"
name: queue-burst
pools:
  training:
    provider: gcp
    instance_type: a3-highgpu-8g
    min_nodes: 2
    max_nodes: 10
    cooldown: 2m
    autoscaling:
      type: queue
      jobs_per_node: 4
  serving:
    min_nodes: 1
    max_nodes: 3
health_policy:
  rules:
    - {name: fell_off_bus, xids: [79], action: replace}
  recovery: {probation: 2}
demand:
  training:
    - {at: 0s, pending: 4}
    - {at: 5m, pending: 40, running: 8, utilization: 90}
    - {at: 20m, pending: 0}
world:
  step: 5s
  provision_time: 90s
  boot_time: 45s
  drain_time: 1m
  terminate_time: 15s
  provision_failure_rate: 0.05
fleet:
  - {id: t-1, pool: training, gpu_count: 8}
  - {id: s-1, pool: serving, gpu_count: 1}
  - {id: x-1, gpu_count: 8}
events:
  - {at: 0s, action: start_fleet}
  - {at: 30m, action: stop_fleet}
assertions:
  - {type: node_count, target: training, expected: ">= 2"}
  - {type: node_count, target: serving, expected: "<= 3"}
"#;

    fn error(yaml: &str) -> ScenarioError {
        match Scenario::from_yaml(yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e,
        }
    }

    /// Asserts the error's path, and that its message contains `words`.
    fn fails(yaml: &str, path: &str, words: &str) {
        let e = error(yaml);
        assert_eq!(e.path, path, "{e}\n{yaml}");
        assert!(e.message.contains(words), "{e:?} should say {words:?}");
    }

    #[test]
    fn a_functional_scenario_reads_as_navarch_writes_it() {
        let s = Scenario::from_yaml(FUNCTIONAL).unwrap();
        assert_eq!(s.name, "ecc-drain-recover");
        assert_eq!(s.fleet.len(), 3);
        assert_eq!(s.fleet[0].labels["generation"], "3");
        let actions: Vec<Action> = s.events.iter().map(|e| e.action).collect();
        assert_eq!(actions.len(), 9);
        let distinct: std::collections::HashSet<_> = actions.iter().collect();
        assert_eq!(distinct.len(), 9, "every action once");
        let inject = &s.events[2].params;
        assert_eq!(inject.failure_type, Some(FailureType::XidError));
        assert_eq!((inject.xid_code, inject.gpu_index), (Some(48), Some(2)));
        assert_eq!(s.events[3].params.timeout_ms, 20_000);
        assert_eq!(s.events[4].at_ms, 6_500);
        assert_eq!(s.events[4].params.command_type, Some(CommandType::Drain));
        assert_eq!(s.events[4].params.command_args["force"], "true");
        assert_eq!(
            s.events[7].params.expected_status,
            Some(NodeStatusName::Active)
        );
        assert_eq!(
            s.assertions.iter().map(|a| a.expected).collect::<Vec<_>>(),
            [
                Expected::NodeStatus(NodeStatusName::Active),
                Expected::Health(HealthName::Healthy),
                Expected::Count(CountCheck::Exactly(3)),
            ]
        );
        assert_eq!(s.assertions[2].kind(), AssertionType::NodeCount);
        assert!(!s.is_stress());
        assert_eq!((s.seed(), s.duration_ms()), (0, 120_000));
        assert!(s.pools.is_empty());
        assert_eq!(s.pool_name(None), DEFAULT_POOL);
        assert_eq!(s.health_policy, HealthPolicy::default());
        assert_eq!(s.world, World::default());
    }

    #[test]
    fn a_stress_scenario_reads_every_field() {
        let s = Scenario::from_yaml(STRESS).unwrap();
        assert!(s.is_stress());
        assert_eq!(
            (s.seed(), s.duration_ms(), s.generated_nodes()),
            (2024, 2_700_000, 400)
        );
        let stress = s.stress.as_ref().unwrap();
        assert_eq!(stress.metrics_interval_ms, 15_000);
        assert_eq!(stress.log_file.as_deref(), Some("zone-storm.log"));
        let generator = stress.fleet_gen.as_ref().unwrap();
        assert_eq!(generator.templates[0].price_per_hour, Some(29.5));
        assert_eq!(generator.zones["europe-west4"].len(), 2);
        let startup = &generator.startup;
        assert_eq!(startup.pattern, StartupPattern::Exponential);
        assert_eq!(
            (startup.cold_start_min_ms, startup.cold_start_max_ms),
            (20_000, 180_000)
        );
        assert_eq!(
            (startup.cold_start_mean_ms, startup.cold_start_stddev_ms),
            (50_000, 12_500)
        );
        let chaos = stress.chaos.as_ref().unwrap();
        assert_eq!(chaos.xid_distribution[&74], 3);
        assert_eq!(chaos.failure_types.len(), 8);
        let cascading = chaos.cascading.as_ref().unwrap();
        assert_eq!(
            cascading.max_depth, DEFAULT_CASCADE_DEPTH,
            "0 means Navarch's default"
        );
        assert_eq!(cascading.scope, CascadeScope::Rack);
        assert_eq!(
            (cascading.min_delay_ms, cascading.max_delay_ms),
            (250, 8_000)
        );
        let recovery = chaos.recovery.as_ref().unwrap();
        assert!(recovery.replace_fatal);
        assert_eq!(recovery.replace_cold_start_ms, 150_000);
        assert_eq!(chaos.scheduled_outages[1].scope, OutageScope::Percentage);
        assert_eq!(chaos.scheduled_outages[1].target, "7.5");
        let correlated = &chaos.correlated_failures;
        assert_eq!(correlated[0].trigger, CorrelationTrigger::Xid(74));
        assert_eq!(
            correlated[1].trigger,
            CorrelationTrigger::Failure(FailureType::Temperature)
        );
        assert_eq!(correlated[1].scope, CorrelatedScope::SameZone);
        assert_eq!(
            s.assertions[0].expected,
            Expected::Count(CountCheck::AtLeast(300)),
            "a bare count in a stress scenario is a floor"
        );
    }

    #[test]
    fn a_flotilla_scenario_reads_pools_policy_demand_and_world() {
        let s = Scenario::from_yaml(FLOTILLA).unwrap();
        let names: Vec<&str> = s.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["training", "serving"]);
        let training = &s.pools[0];
        assert_eq!(
            training.provider, "gcp",
            "kept as written; simulated anyway"
        );
        assert_eq!(training.cooldown, Seconds(120));
        assert_eq!(
            training.autoscaling,
            Some(AutoscalerConfig::Queue { jobs_per_node: 4 })
        );
        assert_eq!(s.pools[1].provider, "sim");
        assert_eq!(s.health_policy.rules[0].name, "fell_off_bus");
        assert_eq!(s.health_policy.recovery.probation, 2);
        assert_eq!(
            s.demand_at("training", 6 * 60_000).unwrap().pending,
            Some(40)
        );
        assert_eq!(s.demand_at("training", 0).unwrap().pending, Some(4));
        assert!(s.demand_at("serving", 0).is_none());
        assert_eq!(s.world.step_ms, 5_000);
        assert_eq!(s.world.drain_time_ms, 60_000);
        assert_eq!(s.world.provision_failure_rate, 0.05);
        assert_eq!(s.pool_name(s.fleet[2].pool.as_deref()), "training");
        assert_eq!(s.pool_name(s.fleet[1].pool.as_deref()), "serving");
        assert_eq!(
            s.assertions[1].expected,
            Expected::Count(CountCheck::AtMost(3))
        );
        assert_eq!(s.duration_ms(), 30 * 60_000);
    }

    #[test]
    fn unknown_fields_are_named_with_their_full_path() {
        let cases = [
            ("nmae: x\n", "nmae"),
            ("name: x\nfleet: [{id: a, lables: {}}]\n", "fleet[0].lables"),
            (
                "name: x\nfleet: [{id: a}]\nevents: [{at: 1s, action: log, params: {log_mesage: hi}}]\n",
                "events[0].params.log_mesage",
            ),
            (
                "name: x\nfleet: [{id: a}]\nstress: {chaos: {cascading: {scop: zone}}}\n",
                "stress.chaos.cascading.scop",
            ),
            (
                "name: x\nfleet: [{id: a}]\nstress: {fleet_gen: {startup: {pattren: wave}}}\n",
                "stress.fleet_gen.startup.pattren",
            ),
            (
                "name: x\nfleet: [{id: a}]\nstress: {chaos: {scheduled_outages: [{scope: zone, target: z, failure_type: network, when: 1m}]}}\n",
                "stress.chaos.scheduled_outages[0].when",
            ),
            ("name: x\nfleet: [{id: a}]\nworld: {stpe: 1s}\n", "world.stpe"),
            (
                "name: x\nfleet: [{id: a}]\ndemand: {fleet: [{at: 0s, pendng: 3}]}\n",
                "demand.fleet[0].pendng",
            ),
            (
                "name: x\nfleet: [{id: a}]\npools: {t: {max_nodes: 3, colour: blue}}\n",
                "pools.t.colour",
            ),
            (
                "name: x\nfleet: [{id: a}]\nhealth_policy: {rules: [{name: r, xids: [79], action: replace, severity: 3}]}\n",
                "health_policy.rules[0].severity",
            ),
        ];
        for (yaml, path) in cases {
            let field = path.rsplit('.').next().unwrap();
            fails(
                yaml,
                path,
                &format!("unknown field `{field}`, expected one of"),
            );
        }
        let e = error(cases[3].0);
        assert!(
            e.to_string().starts_with(
                "stress.chaos.cascading.scop: unknown field `scop`, expected one of `enabled`"
            ),
            "{e}"
        );
    }

    #[test]
    fn closed_sets_list_the_allowed_names() {
        let fleet = "name: x\nfleet: [{id: a}]\n";
        let event = |body: &str| format!("{fleet}events: [{body}]\n");
        let chaos = |body: &str| format!("{fleet}stress: {{chaos: {{{body}}}}}\n");
        fails(
            &event("{at: 1s, action: reboot}"),
            "events[0].action",
            "`wait_for_status`",
        );
        fails(
            &event("{at: 1s, action: inject_failure, target: a, params: {failure_type: meltdown}}"),
            "events[0].params.failure_type",
            "`nvlink_error`",
        );
        fails(
            &event("{at: 1s, action: issue_command, target: a, params: {command_type: reboot}}"),
            "events[0].params.command_type",
            "`cordon`, `uncordon`, `drain`, `terminate`",
        );
        fails(
            &event("{at: 1s, action: issue_command, target: a, params: {command_type: run_diagnostic}}"),
            "events[0].params.command_type",
            "Flotilla has no diagnostics command",
        );
        fails(
            &event("{at: 1s, action: wait_for_status, target: a, params: {expected_status: asleep, timeout: 5s}}"),
            "events[0].params.expected_status",
            "`registering`",
        );
        fails(
            &format!("{fleet}stress: {{fleet_gen: {{startup: {{pattern: burst}}}}}}\n"),
            "stress.fleet_gen.startup.pattern",
            "`exponential`",
        );
        fails(
            &chaos("cascading: {scope: galaxy}"),
            "stress.chaos.cascading.scope",
            "`rack`",
        );
        fails(
            &chaos("scheduled_outages: [{scope: rack, target: r, failure_type: network}]"),
            "stress.chaos.scheduled_outages[0].scope",
            "`percentage`",
        );
        fails(
            &chaos(
                "correlated_failures: [{trigger: '74', response: xid_error, scope: same_region}]",
            ),
            "stress.chaos.correlated_failures[0].scope",
            "`same_node`",
        );
        fails(
            &chaos("correlated_failures: [{trigger: fire, response: xid_error, scope: same_node}]"),
            "stress.chaos.correlated_failures[0].trigger",
            "neither an XID code",
        );
        fails(
            &chaos("correlated_failures: [{trigger: '0', response: xid_error, scope: same_node}]"),
            "stress.chaos.correlated_failures[0].trigger",
            "not an XID code",
        );
        fails(
            &format!("{fleet}assertions: [{{type: node_state, target: a, expected: active}}]\n"),
            "assertions[0].type",
            "`health_status`",
        );
        fails(
            &format!("{fleet}assertions: [{{type: health_status, target: a, expected: active}}]\n"),
            "assertions[0].expected",
            "`degraded`",
        );
        fails(
            &format!("{fleet}assertions: [{{type: node_status, target: a, expected: sleeping}}]\n"),
            "assertions[0].expected",
            "`cordoned`",
        );
    }

    #[test]
    fn bad_durations_name_the_field() {
        let fleet = "name: x\nfleet: [{id: a}]\n";
        fails(
            &format!("{fleet}events: [{{at: 30, action: wait}}]\n"),
            "events[0].at",
            "write e.g. 30s",
        );
        fails(
            &format!("{fleet}events: [{{at: 1.5, action: wait}}]\n"),
            "events[0].at",
            "has no unit",
        );
        fails(
            &format!("{fleet}events: [{{at: 1s, action: wait_for_status, target: a, params: {{expected_status: active, timeout: 5 minutes}}}}]\n"),
            "events[0].params.timeout",
            "unknown unit",
        );
        fails(
            &format!("{fleet}world: {{boot_time: -30s}}\n"),
            "world.boot_time",
            "negative",
        );
        fails(
            &format!("{fleet}stress: {{chaos: {{recovery: {{mean_time: 1d}}}}}}\n"),
            "stress.chaos.recovery.mean_time",
            "unknown unit \"d\"",
        );
    }

    #[test]
    fn the_fleet_is_checked() {
        fails("fleet: [{id: a}]\n", "name", "required");
        fails("name: x\n", "fleet", "no nodes");
        fails(
            "name: x\nfleet: []\nstress: {fleet_gen: {total_nodes: 0}}\n",
            "stress.fleet_gen.total_nodes",
            "no nodes",
        );
        fails(
            "name: x\nfleet: [{id: a}, {gpu_count: 8}]\n",
            "fleet[1].id",
            "required",
        );
        fails(
            "name: x\nfleet: [{id: a}, {id: a}]\n",
            "fleet[1].id",
            "duplicate node id \"a\"",
        );
    }

    /// A generated fleet's scenario with `extra` appended under `fleet_gen`.
    fn generated(extra: &str) -> String {
        format!("name: x\nstress:\n  fleet_gen:\n    total_nodes: 10\n{extra}")
    }

    const TEMPLATE: &str = "    templates: [{name: h, weight: 1, gpu_count: 8}]\n";

    #[test]
    fn the_fleet_generator_is_checked() {
        let base = "stress.fleet_gen";
        fails(&generated(""), &format!("{base}.templates"), "at least one");
        let template = |t: &str| generated(&format!("    templates: [{t}]\n"));
        fails(
            &template("{weight: 1, gpu_count: 8}"),
            &format!("{base}.templates[0].name"),
            "required",
        );
        fails(
            &template("{name: h, gpu_count: 8}"),
            &format!("{base}.templates[0].weight"),
            "at least 1",
        );
        fails(
            &template("{name: h, weight: 1}"),
            &format!("{base}.templates[0].gpu_count"),
            "at least 1",
        );
        fails(
            &template("{name: h, weight: 1, gpu_count: 8, price_per_hour: -2}"),
            &format!("{base}.templates[0].price_per_hour"),
            ">= 0",
        );
        fails(
            &template("{name: h, weight: -1, gpu_count: 8}"),
            &format!("{base}.templates[0].weight"),
            "expected u32",
        );
        let more = |extra: &str| generated(&format!("{TEMPLATE}{extra}"));
        fails(
            &more("    providers: {gcp: 0, aws: 0}\n"),
            &format!("{base}.providers"),
            "add up to 0",
        );
        fails(
            &more("    regions: {us-east1: -5}\n"),
            &format!("{base}.regions.us-east1"),
            "expected u32",
        );
        fails(
            &more("    regions: {us-east1: 1}\n    zones: {eu-west1: [eu-west1-a]}\n"),
            &format!("{base}.zones.eu-west1"),
            "not one of the regions",
        );
        fails(
            &more("    startup: {jitter_percent: 150}\n"),
            &format!("{base}.startup.jitter_percent"),
            "0..=100",
        );
        fails(
            &more("    startup: {cold_start_min: 2m, cold_start_max: 1m}\n"),
            &format!("{base}.startup.cold_start_max"),
            "below cold_start_min",
        );
        // Zones are free when no regions are weighted.
        Scenario::from_yaml(&more("    zones: {eu-west1: [eu-west1-a]}\n")).unwrap();
    }

    /// A generated fleet's scenario with `chaos` as the chaos section's body.
    fn with_chaos(chaos: &str) -> String {
        generated(&format!("{TEMPLATE}  chaos: {{{chaos}}}\n"))
    }

    #[test]
    fn chaos_is_checked() {
        let base = "stress.chaos";
        fails(
            &with_chaos("failure_rate: -1"),
            &format!("{base}.failure_rate"),
            ">= 0",
        );
        fails(
            &with_chaos("failure_rate: .nan"),
            &format!("{base}.failure_rate"),
            ">= 0",
        );
        fails(
            &with_chaos("xid_distribution: {0: 3, 79: 1}"),
            &format!("{base}.xid_distribution.0"),
            "start at 1",
        );
        fails(
            &with_chaos("xid_distribution: {79: 0}"),
            &format!("{base}.xid_distribution"),
            "add up to 0",
        );
        fails(
            &with_chaos("failure_types: [{type: network, weight: 0}]"),
            &format!("{base}.failure_types"),
            "add up to 0",
        );
        fails(
            &with_chaos("cascading: {enabled: true, probability: 1.5}"),
            &format!("{base}.cascading.probability"),
            "0..=1",
        );
        fails(
            &with_chaos("cascading: {max_affected_percent: 20}"),
            &format!("{base}.cascading.max_affected_percent"),
            "a fraction",
        );
        fails(
            &with_chaos("cascading: {min_delay: 5s, max_delay: 1s}"),
            &format!("{base}.cascading.max_delay"),
            "below min_delay (5s)",
        );
        fails(
            &with_chaos("recovery: {probability: -0.1}"),
            &format!("{base}.recovery.probability"),
            "a probability",
        );
        fails(
            &with_chaos(
                "scheduled_outages: [{scope: percentage, target: '150', failure_type: network}]",
            ),
            &format!("{base}.scheduled_outages[0].target"),
            "0..=100",
        );
        fails(
            &with_chaos(
                "scheduled_outages: [{scope: percentage, target: most, failure_type: network}]",
            ),
            &format!("{base}.scheduled_outages[0].target"),
            "0..=100",
        );
        fails(
            &with_chaos("scheduled_outages: [{scope: region, failure_type: network}]"),
            &format!("{base}.scheduled_outages[0].target"),
            "which region",
        );
        fails(
            &with_chaos("correlated_failures: [{trigger: 79, response: xid_error, probability: 2, scope: random}]"),
            &format!("{base}.correlated_failures[0].probability"),
            "0..=1",
        );
        let negative_depth = with_chaos("cascading: {max_depth: -4}");
        let s = Scenario::from_yaml(&negative_depth).unwrap();
        let depth = s
            .stress
            .unwrap()
            .chaos
            .unwrap()
            .cascading
            .unwrap()
            .max_depth;
        assert_eq!(depth, DEFAULT_CASCADE_DEPTH);
    }

    /// An explicit fleet of `a` and `b` with `events` as the events list.
    fn with_events(events: &str) -> String {
        format!("name: x\nfleet: [{{id: a}}, {{id: b}}]\nevents:\n{events}")
    }

    #[test]
    fn events_are_checked() {
        let one = |event: &str| with_events(&format!("  - {event}\n"));
        let cases = [
            ("{action: inject_failure, params: {failure_type: network}}", "events[0].target", "inject_failure"),
            ("{action: inject_failure, target: a}", "events[0].params.failure_type", "xid_error, temperature"),
            ("{action: inject_failure, target: a, params: {failure_type: xid_error}}", "events[0].params.xid_code", "XID code"),
            (
                "{action: inject_failure, target: a, params: {failure_type: xid_error, xid_code: 0}}",
                "events[0].params.xid_code",
                "start at 1",
            ),
            ("{action: recover_failure}", "events[0].target", "recover_failure"),
            ("{action: issue_command, params: {command_type: cordon}}", "events[0].target", "issue_command"),
            ("{action: issue_command, target: a}", "events[0].params.command_type", "cordon, uncordon"),
            ("{action: wait_for_status, params: {expected_status: active, timeout: 5s}}", "events[0].target", "wait_for_status"),
            ("{action: wait_for_status, target: a, params: {timeout: 5s}}", "events[0].params.expected_status", "status"),
            ("{action: wait_for_status, target: a, params: {expected_status: active}}", "events[0].params.timeout", "how long"),
            ("{action: log}", "events[0].params.log_message", "log"),
            ("{action: log, params: {log_message: ''}}", "events[0].params.log_message", "log"),
            ("{action: assert, params: {expected_status: active}}", "events[0].target", "assert"),
            ("{action: assert, target: a}", "events[0].params.expected_status", "assert"),
            ("{action: recover_failure, target: zz}", "events[0].target", "\"zz\" is not a node in `fleet` (nodes: a, b)"),
        ];
        for (event, path, words) in cases {
            fails(&one(event), path, words);
        }
        fails(
            &with_events("  - {at: 5s, action: wait}\n  - {at: 1m, action: wait}\n  - {at: 30s, action: wait}\n"),
            "events[2].at",
            "30s is before the previous event's 1m0s",
        );
        // Equal times are in order.
        Scenario::from_yaml(&with_events(
            "  - {at: 5s, action: wait}\n  - {at: 5s, action: start_fleet}\n",
        ))
        .unwrap();
    }

    #[test]
    fn a_generated_fleet_leaves_targets_to_the_runner() {
        let yaml = generated(&format!(
            "{TEMPLATE}events:\n  - {{at: 1s, action: recover_failure, target: gcp-us-h-0001}}\n\
             assertions:\n  - {{type: node_status, target: gcp-us-h-0002, expected: active}}\n"
        ));
        Scenario::from_yaml(&yaml).unwrap();
    }

    #[test]
    fn assertions_are_checked() {
        let fleet = "name: x\nfleet: [{id: a}]\nassertions:\n";
        let one = |assertion: &str| format!("{fleet}  - {assertion}\n");
        fails(
            &one("{type: node_status, expected: active}"),
            "assertions[0].target",
            "required",
        );
        fails(
            &one("{type: health_status, target: '', expected: healthy}"),
            "assertions[0].target",
            "required",
        );
        fails(
            &one("{type: node_status, target: q, expected: active}"),
            "assertions[0].target",
            "not a node",
        );
        fails(
            &one("{type: node_count, target: a, expected: '1'}"),
            "assertions[0].target",
            "neither `all` nor a pool",
        );
        fails(
            &one("{type: node_count, target: all, expected: lots}"),
            "assertions[0].expected",
            "not a node count",
        );
        fails(
            &one("{type: node_count, target: all, expected: '>= -1'}"),
            "assertions[0].expected",
            "not a node count",
        );
        fails(
            &one("{type: node_count, target: all}"),
            "assertions[0]",
            "missing field `expected`",
        );
        // Unquoted numbers, `all` and the default pool are fine.
        let s = Scenario::from_yaml(&format!(
            "{fleet}  - {{type: node_count, expected: 1}}\n  - {{type: node_count, target: fleet, expected: '> 0'}}\n  - {{type: node_status, target: all, expected: active}}\n"
        ))
        .unwrap();
        assert_eq!(s.assertions[0].target, "all");
        assert_eq!(
            s.assertions[0].expected,
            Expected::Count(CountCheck::Exactly(1))
        );
    }

    #[test]
    fn count_checks_parse_compare_and_print() {
        let parse = |text: &str| CountCheck::parse(text, false).unwrap();
        assert_eq!(parse(">= 3000"), CountCheck::AtLeast(3000));
        assert_eq!(parse("<=10"), CountCheck::AtMost(10));
        assert_eq!(parse(" > 0 "), CountCheck::More(0));
        assert_eq!(parse("<5"), CountCheck::Less(5));
        assert_eq!(parse("= 8"), CountCheck::Exactly(8));
        assert_eq!(parse("8"), CountCheck::Exactly(8));
        assert_eq!(CountCheck::parse("8", true), Ok(CountCheck::AtLeast(8)));
        assert!(CountCheck::parse("=> 8", false).is_err());
        assert!(CountCheck::parse("", false).is_err());
        let checks = [
            (CountCheck::AtLeast(3), [false, true, true], ">= 3"),
            (CountCheck::AtMost(3), [true, true, false], "<= 3"),
            (CountCheck::Exactly(3), [false, true, false], "= 3"),
            (CountCheck::More(3), [false, false, true], "> 3"),
            (CountCheck::Less(3), [true, false, false], "< 3"),
        ];
        for (check, holds, shown) in checks {
            assert_eq!([2, 3, 4].map(|n| check.holds(n)), holds, "{check}");
            assert_eq!(check.to_string(), shown);
            assert_eq!(CountCheck::parse(shown, false), Ok(check));
        }
    }

    /// The Flotilla scenario with `from` replaced by `to`.
    fn flotilla_with(from: &str, to: &str) -> String {
        assert!(FLOTILLA.contains(from), "{from}");
        FLOTILLA.replacen(from, to, 1)
    }

    #[test]
    fn flotilla_additions_are_checked() {
        fails(
            &flotilla_with("max_nodes: 10", "max_nodes: 1"),
            "pools.training",
            "min_nodes (2) must not exceed max_nodes (1)",
        );
        fails(
            &flotilla_with("type: queue", "type: magic"),
            "pools.training.autoscaling.type",
            "unknown variant `magic`",
        );
        fails(
            "name: x\nfleet: [{id: a}]\npools: []\n",
            "pools",
            "no pools",
        );
        fails(
            &flotilla_with("recovery: {probation: 2}", "thermal: {bad: 9, of: 5}"),
            "health_policy.thermal",
            "bad (9)",
        );
        fails(
            &flotilla_with(
                "- {name: fell_off_bus, xids: [79], action: replace}",
                "- {name: r, xids: [79]}",
            ),
            "health_policy.rules[0] (r)",
            "exactly one of action",
        );
        fails(
            &flotilla_with("demand:\n  training:", "demand:\n  inference:"),
            "demand.inference",
            "not a pool",
        );
        fails(
            &flotilla_with("{at: 5m, pending: 40", "{at: 25m, pending: 40"),
            "demand.training[2].at",
            "20m0s is before the previous step's 25m0s",
        );
        fails(
            &flotilla_with("utilization: 90", "utilization: 120"),
            "demand.training[1].utilization",
            "0..=100",
        );
        fails(
            &flotilla_with("{id: t-1, pool: training", "{id: t-1, pool: train"),
            "fleet[0].pool",
            "\"train\" is not a pool (pools: training, serving)",
        );
        fails(
            &flotilla_with("step: 5s", "step: 0s"),
            "world.step",
            "longer than 0",
        );
        fails(
            &flotilla_with("provision_failure_rate: 0.05", "provision_failure_rate: 5"),
            "world.provision_failure_rate",
            "0..=1",
        );
        fails(
            &flotilla_with("target: serving", "target: inference"),
            "assertions[1].target",
            "neither `all` nor a pool",
        );
    }

    #[test]
    fn without_pools_everything_is_in_the_default_pool() {
        let fleet = "name: x\nfleet: [{id: a, pool: fleet}]\n";
        let s = Scenario::from_yaml(&format!(
            "{fleet}demand: {{fleet: [{{at: 0s, running: 2}}]}}\n"
        ))
        .unwrap();
        assert_eq!(s.demand_at(DEFAULT_POOL, 10).unwrap().running, Some(2));
        fails(
            "name: x\nfleet: [{id: a, pool: training}]\n",
            "fleet[0].pool",
            "no `pools:`",
        );
        fails(
            &format!("{fleet}demand: {{training: []}}\n"),
            "demand.training",
            "no `pools:`",
        );
        fails(
            &generated("    templates: [{name: h, weight: 1, gpu_count: 8, pool: training}]\n"),
            "stress.fleet_gen.templates[0].pool",
            "no `pools:`",
        );
    }

    #[test]
    fn pools_for_real_clouds_run_on_the_simulated_one() {
        let yaml = "name: x\nfleet: [{id: a}]\npools:\n  - name: p\n    providers: [{name: lambda, priority: 1}, {name: aws}]\n    max_nodes: 4\n";
        let s = Scenario::from_yaml(yaml).unwrap();
        assert_eq!(s.pools[0].provider, "lambda");
        assert_eq!(s.pools[0].providers.len(), 2);
    }

    #[test]
    fn durations_and_end_of_run() {
        let s = Scenario::from_yaml(&with_events(
            "  - {at: 0, action: start_fleet}\n  - {at: 1s, action: wait_for_status, target: a, params: {expected_status: active, timeout: 2m}}\n  - {at: 10s, action: stop_fleet}\n",
        ))
        .unwrap();
        assert_eq!(
            s.duration_ms(),
            121_000,
            "the longest wait outlasts the last event"
        );
        let s = Scenario::from_yaml("name: x\nfleet: [{id: a}]\n").unwrap();
        assert_eq!(s.duration_ms(), 1);
    }
}
