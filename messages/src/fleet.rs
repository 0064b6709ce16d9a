//! GPU node pool configuration: what `flotilla pools validate`, the
//! provisioner's `apply_pool` command and its `pool_configured` event carry.
//!
//! Users bring pool files in two spellings and both are accepted:
//!
//! - the seed's (Navarch's documentation): a list of pools with `name:`,
//!   `scaling: {min_nodes, max_nodes, cooldown_period, autoscaler: {type,
//!   scale_up_threshold, scale_down_threshold, jobs_per_node, mode,
//!   autoscalers}}` and `health: {unhealthy_threshold, auto_replace}`;
//! - Navarch's code: a map of pools by name with `min_nodes`, `max_nodes`,
//!   `cooldown` and `autoscaling: {type, scale_up_at, scale_down_at, ...,
//!   strategies}` on the pool, and `health: {unhealthy_after, auto_replace}`.
//!
//! Anything else is an error naming the field (`pools[0].scaling.min_nodes:
//! ...`). A parsed [`PoolConfig`] is always valid: validation runs inside
//! deserialization, so a command, an event and a file cannot disagree.
//! It serializes in one canonical spelling (Navarch's code spelling with
//! durations in seconds), which reads back through the same path.
//!
//! Neighbours: [`crate::provisioner`] (commands and events that carry a
//! [`PoolConfig`]); the provisioner actor (`flotilla-provisioner`) interprets the
//! autoscalers; the CLI's `pools validate` prints [`ConfigError`]s.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// A configuration error: where (a dotted path) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The field at fault, e.g. `pools[0].scaling.min_nodes`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A length of time in whole seconds, written as a number of seconds or a
/// string with a unit (`90`, `30s`, `5m`, `1h`, `1d`, `1500ms` rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seconds(pub u64);

impl Seconds {
    /// The length in milliseconds.
    pub fn millis(self) -> u64 {
        self.0.saturating_mul(1000)
    }
}

/// Parses `90`, `30s`, `5m`, `1h`, `1d`, `250ms`, `1h30m` into seconds
/// (milliseconds round up). A negative length is an error.
pub fn parse_seconds(text: &str) -> Result<Seconds, String> {
    parse_millis(text).map(|ms| Seconds(ms.div_ceil(1000)))
}

/// Parses a duration like [`parse_seconds`] into milliseconds (a bare
/// number is seconds).
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("must not be negative, got {t:?}"));
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n.saturating_mul(1000));
    }
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let (number, unit) = (&rest[..digits], &rest[digits..unit_end]);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("bad duration {t:?}: expected e.g. 90, 30s, 5m, 1h"))?;
        let ms = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("bad duration {t:?}: unit must be ms, s, m, h or d")),
        };
        total_ms = total_ms.saturating_add(n.saturating_mul(ms));
        rest = &rest[unit_end..];
    }
    Ok(total_ms)
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: seconds or a string like 30s, 5m, 1h")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(Seconds)
                    .map_err(|_| E::custom(format!("must not be negative, got {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(E::custom(format!("must not be negative, got {v}")));
                }
                Ok(Seconds(v.ceil() as u64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_seconds(v).map_err(E::custom)
            }
        }
        d.deserialize_any(SecondsVisitor)
    }
}

/// How a composite autoscaler combines its members' answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CombineMode {
    /// The largest answer (never under-provision).
    #[default]
    Max,
    /// The smallest answer.
    Min,
    /// The mean, rounded up.
    Avg,
}

/// A time window of a scheduled autoscaler, with its own bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleWindow {
    /// Days it applies to (`mon`..`sun` or full names); every day when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// Start, `HH:MM` UTC (inclusive).
    pub start: String,
    /// End, `HH:MM` UTC (exclusive); before `start` means it runs past midnight.
    pub end: String,
    /// The pool's minimum inside the window.
    pub min_nodes: u32,
    /// The pool's maximum inside the window.
    pub max_nodes: u32,
}

/// The weekday index (0 = Monday) of a day name, if it is one.
pub fn weekday_index(day: &str) -> Option<u32> {
    const NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let d = day.trim().to_ascii_lowercase();
    NAMES
        .iter()
        .position(|n| d.len() >= 3 && n.starts_with(&d))
        .map(|i| i as u32)
}

/// Minutes after midnight of `HH:MM`, if it is one (`24:00` allowed as an end).
pub fn minute_of_day(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let ok = m < 60 && (h < 24 || (h == 24 && m == 0));
    ok.then_some(h * 60 + m)
}

fn default_up() -> f64 {
    80.0
}
fn default_down() -> f64 {
    20.0
}
fn default_jobs_per_node() -> u32 {
    1
}
fn default_lookback() -> u32 {
    10
}
fn default_growth() -> f64 {
    1.2
}

/// How a pool picks its size. Navarch's names for fields are accepted as
/// aliases (`scale_up_at`, `scale_down_at`, `strategies`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AutoscalerConfig {
    /// Utilisation thresholds (percent): above `scale_up_threshold` add a
    /// node, below `scale_down_threshold` remove one.
    Reactive {
        /// Mean GPU utilisation (%) above which the pool grows.
        #[serde(default = "default_up", alias = "scale_up_at")]
        scale_up_threshold: f64,
        /// Mean GPU utilisation (%) below which the pool shrinks.
        #[serde(default = "default_down", alias = "scale_down_at")]
        scale_down_threshold: f64,
    },
    /// Pending + running jobs ÷ `jobs_per_node`, rounded up.
    Queue {
        /// Jobs one node takes.
        #[serde(default = "default_jobs_per_node")]
        jobs_per_node: u32,
    },
    /// Time windows with their own bounds; `fallback` decides inside them.
    Scheduled {
        /// The windows; the first that contains the time applies.
        schedule: Vec<ScheduleWindow>,
        /// What decides within the bounds (the current size if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(no_recursion))]
        fallback: Option<Box<AutoscalerConfig>>,
    },
    /// The trend of demand (nodes needed) over the last `lookback_window`
    /// samples, extrapolated one step and scaled by `growth_factor`.
    Predictive {
        /// Samples considered.
        #[serde(default = "default_lookback")]
        lookback_window: u32,
        /// Head-room multiplier on the prediction, > 0.
        #[serde(default = "default_growth")]
        growth_factor: f64,
    },
    /// Several autoscalers combined by `mode`.
    Composite {
        /// max, min or avg.
        #[serde(default)]
        mode: CombineMode,
        /// The members (Navarch's docs call them `strategies`).
        #[serde(alias = "strategies")]
        #[cfg_attr(feature = "openapi", schema(no_recursion))]
        autoscalers: Vec<AutoscalerConfig>,
    },
}

impl AutoscalerConfig {
    /// The first problem, as `(field, message)` relative to this autoscaler.
    fn problem(&self) -> Option<(String, String)> {
        match self {
            AutoscalerConfig::Reactive {
                scale_up_threshold: up,
                scale_down_threshold: down,
            } => {
                let pct = |v: f64| v.is_finite() && (0.0..=100.0).contains(&v);
                if !pct(*up) {
                    return Some((
                        "scale_up_threshold".into(),
                        format!("must be in 0..=100, got {up}"),
                    ));
                }
                if !pct(*down) {
                    return Some((
                        "scale_down_threshold".into(),
                        format!("must be in 0..=100, got {down}"),
                    ));
                }
                (down >= up).then(|| {
                    (
                        "scale_down_threshold".into(),
                        format!("{down} must be below scale_up_threshold {up}"),
                    )
                })
            }
            AutoscalerConfig::Queue { jobs_per_node } => (*jobs_per_node == 0)
                .then(|| ("jobs_per_node".into(), "must be at least 1, got 0".into())),
            AutoscalerConfig::Scheduled { schedule, fallback } => schedule
                .iter()
                .enumerate()
                .find_map(|(i, w)| {
                    window_problem(w).map(|(f, m)| (format!("schedule[{i}].{f}"), m))
                })
                .or_else(|| {
                    let (f, m) = fallback.as_ref()?.problem()?;
                    Some((format!("fallback.{f}"), m))
                }),
            AutoscalerConfig::Predictive {
                lookback_window,
                growth_factor,
            } => {
                if *lookback_window < 2 {
                    return Some((
                        "lookback_window".into(),
                        format!("must be at least 2 samples, got {lookback_window}"),
                    ));
                }
                let ok = growth_factor.is_finite() && *growth_factor > 0.0;
                (!ok).then(|| {
                    (
                        "growth_factor".into(),
                        format!("must be > 0, got {growth_factor}"),
                    )
                })
            }
            AutoscalerConfig::Composite { autoscalers, .. } => {
                if autoscalers.is_empty() {
                    return Some(("autoscalers".into(), "needs at least one autoscaler".into()));
                }
                autoscalers.iter().enumerate().find_map(|(i, a)| {
                    let (f, m) = a.problem()?;
                    Some((format!("autoscalers[{i}].{f}"), m))
                })
            }
        }
    }
}

fn window_problem(w: &ScheduleWindow) -> Option<(String, String)> {
    if let Some(d) = w.days.iter().find(|d| weekday_index(d).is_none()) {
        return Some(("days".into(), format!("{d:?} is not a day (mon..sun)")));
    }
    for (field, value) in [("start", &w.start), ("end", &w.end)] {
        if minute_of_day(value).is_none() {
            return Some((field.into(), format!("{value:?} is not HH:MM")));
        }
    }
    (w.min_nodes > w.max_nodes).then(|| {
        (
            "min_nodes".into(),
            format!("{} must not exceed max_nodes {}", w.min_nodes, w.max_nodes),
        )
    })
}

/// How the provisioner treats health reports of a pool's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Consecutive unhealthy evaluations before the node is taken out
    /// (Navarch: `unhealthy_after`).
    #[serde(default = "default_threshold", alias = "unhealthy_after")]
    pub unhealthy_threshold: u32,
    /// Replace a node taken out for hardware faults.
    #[serde(default = "default_true")]
    pub auto_replace: bool,
    /// After registering, health reports are not counted for this long.
    #[serde(default = "default_boot_grace")]
    pub boot_grace: Seconds,
    /// A node whose agent is silent for this long is unhealthy.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout: Seconds,
}

fn default_threshold() -> u32 {
    2
}
fn default_true() -> bool {
    true
}
fn default_boot_grace() -> Seconds {
    Seconds(120)
}
fn default_heartbeat_timeout() -> Seconds {
    Seconds(120)
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            unhealthy_threshold: default_threshold(),
            auto_replace: true,
            boot_grace: default_boot_grace(),
            heartbeat_timeout: default_heartbeat_timeout(),
        }
    }
}

/// What a drain does with workloads still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DrainMode {
    /// Evict at once (NVSentinel's Immediate).
    #[serde(alias = "immediate")]
    Evict,
    /// Wait for workloads however long they take (AllowCompletion); the
    /// timeout only raises `drain_overdue`.
    #[serde(alias = "allow_completion")]
    Wait,
    /// Wait up to the timeout, then evict (DeleteAfterTimeout).
    #[default]
    #[serde(alias = "delete_after_timeout")]
    EvictAfterTimeout,
}

/// The fleet-wide brake on automatic replacement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSettings {
    /// Trip when more than this share (percent) of the pool was replaced
    /// within `window`.
    #[serde(default = "default_breaker_percent")]
    pub max_replaced_percent: f64,
    /// The window (and how long the breaker stays open).
    #[serde(default = "default_breaker_window")]
    pub window: Seconds,
}

fn default_breaker_percent() -> f64 {
    50.0
}
fn default_breaker_window() -> Seconds {
    Seconds(300)
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        CircuitBreakerSettings {
            max_replaced_percent: default_breaker_percent(),
            window: default_breaker_window(),
        }
    }
}

/// How nodes are taken out and replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplacementSettings {
    /// Nodes allowed above `max_nodes` while replacements boot.
    #[serde(default = "default_surge")]
    pub surge: u32,
    /// How long a drain may take.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Seconds,
    /// What happens when it takes longer.
    #[serde(default)]
    pub drain_mode: DrainMode,
    /// A provisioned node that does not register within this is failed
    /// (Navarch: 10 min).
    #[serde(default = "default_registration_timeout")]
    pub registration_timeout: Seconds,
    /// A node cordoned for a GPU reset that is not healthy again within
    /// this is replaced.
    #[serde(default = "default_reset_timeout")]
    pub reset_timeout: Seconds,
    /// The circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSettings,
}

fn default_reset_timeout() -> Seconds {
    Seconds(1800)
}

fn default_surge() -> u32 {
    1
}
fn default_drain_timeout() -> Seconds {
    Seconds(3600)
}
fn default_registration_timeout() -> Seconds {
    Seconds(600)
}

impl Default for ReplacementSettings {
    fn default() -> Self {
        ReplacementSettings {
            surge: default_surge(),
            drain_timeout: default_drain_timeout(),
            drain_mode: DrainMode::default(),
            registration_timeout: default_registration_timeout(),
            reset_timeout: default_reset_timeout(),
            circuit_breaker: CircuitBreakerSettings::default(),
        }
    }
}

/// One provider of a multi-provider Navarch pool (`providers: [...]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderChoice {
    /// The provider's name.
    pub name: String,
    /// Lower is tried first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Share for weighted strategies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Regions to try.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Overrides the pool's instance type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

/// A validated pool. Deserializes from either spelling; serializes in the
/// canonical one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PoolWire")]
pub struct PoolConfig {
    /// The pool's id (also its aggregate id): `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// The provider's name (`sim`, `exec`, `kubernetes` or a configured name).
    pub provider: String,
    /// Further providers in order of preference (Navarch `providers:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderChoice>,
    /// How a multi-provider pool picks (`priority`, `cost`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The cloud instance type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// SSH keys to install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// SSH user for setup commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    /// SSH key file for setup commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_private_key_path: Option<String>,
    /// Labels every node gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Commands run on a new node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_commands: Vec<String>,
    /// The fewest nodes.
    pub min_nodes: u32,
    /// The most nodes (replacements may surge above).
    pub max_nodes: u32,
    /// Time after an autoscaling change before the next one.
    pub cooldown: Seconds,
    /// How the size is picked; none: the size stays at `min_nodes` unless
    /// resized explicitly (Kubernetes controls scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalerConfig>,
    /// Health handling.
    pub health: HealthSettings,
    /// Replacement and drain.
    pub replacement: ReplacementSettings,
}

/// The seed's `scaling:` block.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct ScalingWire {
    min_nodes: Option<u32>,
    max_nodes: Option<u32>,
    #[serde(alias = "cooldown")]
    cooldown_period: Option<Seconds>,
    #[serde(alias = "autoscaling")]
    autoscaler: Option<AutoscalerConfig>,
}

/// A pool as either spelling writes it.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct PoolWire {
    name: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    providers: Vec<ProviderChoice>,
    strategy: Option<String>,
    instance_type: Option<String>,
    region: Option<String>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    ssh_keys: Vec<String>,
    ssh_user: Option<String>,
    ssh_private_key_path: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    setup_commands: Vec<String>,
    min_nodes: Option<u32>,
    max_nodes: Option<u32>,
    #[serde(alias = "cooldown_period")]
    cooldown: Option<Seconds>,
    #[serde(alias = "autoscaler")]
    autoscaling: Option<AutoscalerConfig>,
    scaling: Option<ScalingWire>,
    #[serde(default)]
    health: HealthSettings,
    #[serde(default)]
    replacement: ReplacementSettings,
}

#[cfg(feature = "openapi")]
schema_as_wire!(PoolConfig, PoolWire);

/// Takes a value given in at most one of two places.
fn one_of<T>(field: &str, top: Option<T>, scaling: Option<T>) -> Result<Option<T>, String> {
    match (top, scaling) {
        (Some(_), Some(_)) => Err(format!(
            "{field} is given both on the pool and under scaling: give it once"
        )),
        (a, b) => Ok(a.or(b)),
    }
}

impl TryFrom<PoolWire> for PoolConfig {
    type Error = String;

    fn try_from(w: PoolWire) -> Result<Self, String> {
        let s = w.scaling.unwrap_or(ScalingWire {
            min_nodes: None,
            max_nodes: None,
            cooldown_period: None,
            autoscaler: None,
        });
        let min_nodes = one_of("min_nodes", w.min_nodes, s.min_nodes)?.unwrap_or(0);
        let max_nodes = one_of("max_nodes", w.max_nodes, s.max_nodes)?
            .ok_or("max_nodes: missing (on the pool or under scaling)")?;
        let provider = match (w.provider, w.providers.first()) {
            (Some(p), _) => p,
            (None, Some(first)) => first.name.clone(),
            (None, None) => return Err("provider: missing".into()),
        };
        let config = PoolConfig {
            name: w.name.ok_or("name: missing")?,
            provider,
            providers: w.providers,
            strategy: w.strategy,
            instance_type: w.instance_type,
            region: w.region,
            zones: w.zones,
            ssh_keys: w.ssh_keys,
            ssh_user: w.ssh_user,
            ssh_private_key_path: w.ssh_private_key_path,
            labels: w.labels,
            setup_commands: w.setup_commands,
            min_nodes,
            max_nodes,
            cooldown: one_of("cooldown", w.cooldown, s.cooldown_period)?.unwrap_or(Seconds(300)),
            autoscaling: one_of("autoscaler", w.autoscaling, s.autoscaler)?,
            health: w.health,
            replacement: w.replacement,
        };
        config.problem().map_or(Ok(config), Err)
    }
}

impl PoolConfig {
    fn problem(&self) -> Option<String> {
        if crate::validate_id("pool name", &self.name).is_err() {
            return Some(format!(
                "name: {:?} must match [A-Za-z0-9_-]{{1,64}}",
                self.name
            ));
        }
        if self.provider.trim().is_empty() {
            return Some("provider: must not be empty".into());
        }
        if self.min_nodes > self.max_nodes {
            return Some(format!(
                "min_nodes ({}) must not exceed max_nodes ({})",
                self.min_nodes, self.max_nodes
            ));
        }
        if self.health.unhealthy_threshold == 0 {
            return Some("health.unhealthy_threshold: must be at least 1, got 0".into());
        }
        if self.health.heartbeat_timeout.0 == 0 {
            return Some("health.heartbeat_timeout: must be at least 1s".into());
        }
        let p = self.replacement.circuit_breaker.max_replaced_percent;
        if !(p.is_finite() && p > 0.0 && p <= 100.0) {
            return Some(format!(
                "replacement.circuit_breaker.max_replaced_percent: must be in (0, 100], got {p}"
            ));
        }
        if self.replacement.registration_timeout.0 == 0 {
            return Some("replacement.registration_timeout: must be at least 1s".into());
        }
        let (field, message) = self.autoscaling.as_ref()?.problem()?;
        Some(format!("autoscaler.{field}: {message}"))
    }
}

/// A provider definition (`providers: {NAME: {type: ..., ...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// The in-process fake cloud.
    Sim {
        /// How long provisioning takes.
        #[serde(default)]
        provision_delay: Seconds,
        /// Probability (0..=1) that a provisioning fails.
        #[serde(default)]
        failure_rate: f64,
        /// Seeds which provisionings fail.
        #[serde(default)]
        seed: u64,
        /// Whether a new node registers by itself (its agent comes up);
        /// otherwise it waits for its agent's first heartbeat.
        #[serde(default = "default_true")]
        auto_register: bool,
        /// Keeps the fake cloud's instances across restarts (JSON file).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_file: Option<String>,
    },
    /// User commands: each prints JSON on stdout.
    Exec {
        /// Creates a node; gets `FLOTILLA_NODE_ID`, `FLOTILLA_POOL`,
        /// `FLOTILLA_INSTANCE_TYPE`, `FLOTILLA_REGION`, `FLOTILLA_LABELS`
        /// (JSON); prints `{"instance_id": "..."}`.
        provision: String,
        /// Lists the pool's nodes; prints `[{"node_id", "instance_id"}]`.
        list: String,
        /// Deletes a node; gets `FLOTILLA_NODE_ID`, `FLOTILLA_INSTANCE_ID`.
        terminate: String,
        /// Optional: cordons a node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cordon: Option<String>,
        /// Optional: drains a node (exit 0 when drained).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drain: Option<String>,
        /// How long one command may run.
        #[serde(default = "default_exec_timeout")]
        timeout: Seconds,
    },
    /// Nodes are Kubernetes Nodes (cordon and drain through the API): the
    /// cluster's own node groups create them, a pool's are the Nodes
    /// labelled `pool_label: <pool>`, a node's id is its Node's name.
    Kubernetes {
        /// Namespace scope of evictions (all when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// The Node label naming a Node's pool.
        #[serde(default = "default_pool_label")]
        pool_label: String,
    },
}

/// The Node label naming a Node's pool unless a provider says otherwise.
pub const DEFAULT_POOL_LABEL: &str = "flotilla.dev/pool";

fn default_pool_label() -> String {
    DEFAULT_POOL_LABEL.into()
}

fn default_exec_timeout() -> Seconds {
    Seconds(600)
}

/// The built-in provider names usable without a `providers:` entry.
pub const BUILTIN_PROVIDERS: &[&str] = &["sim"];

/// Provider types Navarch has that Flotilla runs through `exec`.
const NAVARCH_PROVIDER_TYPES: &[&str] = &["lambda", "gcp", "aws", "fake"];

/// A pools file: `pools` (a list with `name:` or a map by name), optional
/// `providers`, and Navarch's `server:` section (read and ignored).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolsFile {
    /// The pools, in file order.
    pub pools: Vec<PoolConfig>,
    /// Provider definitions by name.
    pub providers: BTreeMap<String, ProviderConfig>,
}

impl PoolsFile {
    /// Parses and validates a YAML pools file; the error names the field.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let root: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::new("(file)", e.to_string()))?;
        let serde_yaml::Value::Mapping(map) = root else {
            return Err(ConfigError::new("(file)", "expected a map with `pools:`"));
        };
        let mut file = PoolsFile::default();
        let mut pools_value = None;
        for (key, value) in map {
            match key.as_str().unwrap_or_default() {
                "pools" => pools_value = Some(value),
                "providers" => file.providers = parse_providers(value)?,
                "server" => {}
                other => {
                    return Err(ConfigError::new(
                        other,
                        "unknown field, expected one of `pools`, `providers`, `server`",
                    ))
                }
            }
        }
        let pools = pools_value.ok_or_else(|| ConfigError::new("pools", "missing"))?;
        file.pools = parse_pools(pools)?;
        file.check_references()?;
        Ok(file)
    }

    fn check_references(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, pool) in self.pools.iter().enumerate() {
            if !seen.insert(&pool.name) {
                return Err(ConfigError::new(
                    format!("pools[{i}].name"),
                    format!("pool {:?} is defined twice", pool.name),
                ));
            }
            let names =
                std::iter::once(&pool.provider).chain(pool.providers.iter().map(|p| &p.name));
            for name in names {
                let known =
                    self.providers.contains_key(name) || BUILTIN_PROVIDERS.contains(&name.as_str());
                if !known {
                    return Err(ConfigError::new(
                        format!("pools[{i}].provider"),
                        format!(
                            "{name:?} is not defined: use `sim` or define it under `providers:` \
                             (type sim, exec or kubernetes)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn parse_providers(
    value: serde_yaml::Value,
) -> Result<BTreeMap<String, ProviderConfig>, ConfigError> {
    let serde_yaml::Value::Mapping(map) = value else {
        return Err(ConfigError::new(
            "providers",
            "expected a map of providers by name",
        ));
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let name = key.as_str().unwrap_or_default().to_string();
        let path = format!("providers.{name}");
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        if NAVARCH_PROVIDER_TYPES.contains(&kind) {
            return Err(ConfigError::new(
                format!("{path}.type"),
                format!(
                    "{kind:?} has no built-in client in Flotilla: use type exec with the cloud's CLI \
                     (provision, list and terminate commands), sim or kubernetes"
                ),
            ));
        }
        let config: ProviderConfig = from_value(&path, value)?;
        if let ProviderConfig::Kubernetes { pool_label, .. } = &config {
            check_label_key(pool_label)
                .map_err(|m| ConfigError::new(format!("{path}.pool_label"), m))?;
        }
        out.insert(name, config);
    }
    Ok(out)
}

/// Whether `key` can be a Kubernetes label key: an optional DNS prefix and
/// `/`, then a name of at most 63 `[A-Za-z0-9._-]` starting and ending
/// alphanumeric.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
    if name_ok && prefix_ok && !(key.contains('/') && prefix.is_empty()) {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a Kubernetes label key (e.g. flotilla.dev/pool)"
        ))
    }
}

fn parse_pools(value: serde_yaml::Value) -> Result<Vec<PoolConfig>, ConfigError> {
    match value {
        serde_yaml::Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| from_value(&format!("pools[{i}]"), v))
            .collect(),
        serde_yaml::Value::Mapping(map) => map
            .into_iter()
            .map(|(key, mut v)| {
                let name = key.as_str().unwrap_or_default().to_string();
                let path = format!("pools.{name}");
                if let serde_yaml::Value::Mapping(m) = &mut v {
                    if m.contains_key("name") {
                        return Err(ConfigError::new(
                            format!("{path}.name"),
                            "a pool in a map is named by its key; remove `name:`",
                        ));
                    }
                    m.insert("name".into(), name.clone().into());
                }
                from_value(&path, v)
            })
            .collect(),
        _ => Err(ConfigError::new(
            "pools",
            "expected a list of pools with `name:` or a map of pools by name",
        )),
    }
}

/// Deserializes `value`, prefixing error paths with `base`.
fn from_value<T: serde::de::DeserializeOwned>(
    base: &str,
    value: serde_yaml::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            base.to_string()
        } else {
            format!("{base}.{inner}")
        };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
server:
  address: 0.0.0.0:50051
pools:
  - name: training
    provider: sim
    instance_type: gpu_8x_h100_sxm5
    region: us-west-2
    scaling:
      min_nodes: 2
      max_nodes: 20
      cooldown_period: 10m
      autoscaler:
        type: composite
        mode: max
        autoscalers:
          - type: reactive
            scale_up_threshold: 80
            scale_down_threshold: 20
          - type: queue
            jobs_per_node: 8
    health:
      unhealthy_threshold: 2
      auto_replace: true
    labels:
      workload: training
"#;

    const NAVARCH: &str = r#"
providers:
  cloud:
    type: exec
    provision: ./provision.sh
    list: ./list.sh
    terminate: ./terminate.sh
pools:
  training:
    provider: cloud
    instance_type: gpu_8x_h100_sxm5
    min_nodes: 2
    max_nodes: 20
    cooldown: 10m
    autoscaling:
      type: composite
      mode: max
      strategies:
        - type: reactive
          scale_up_at: 80
          scale_down_at: 20
        - type: queue
          jobs_per_node: 8
    health:
      unhealthy_after: 2
      auto_replace: true
    labels:
      workload: training
"#;

    fn error(text: &str) -> ConfigError {
        PoolsFile::from_yaml(text).unwrap_err()
    }

    #[test]
    fn both_spellings_read_to_the_same_pool() {
        let seed = PoolsFile::from_yaml(SEED).unwrap();
        let navarch = PoolsFile::from_yaml(NAVARCH).unwrap();
        let (a, b) = (&seed.pools[0], &navarch.pools[0]);
        assert_eq!(a.name, "training");
        assert_eq!(a.cooldown, Seconds(600));
        assert_eq!(a.autoscaling, b.autoscaling);
        assert_eq!(a.health, b.health);
        assert_eq!((a.min_nodes, a.max_nodes), (b.min_nodes, b.max_nodes));
        assert!(matches!(
            navarch.providers["cloud"],
            ProviderConfig::Exec { .. }
        ));
    }

    #[test]
    fn canonical_form_reads_back() {
        let pool = PoolsFile::from_yaml(SEED).unwrap().pools.remove(0);
        let json = serde_json::to_value(&pool).unwrap();
        let back: PoolConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, pool);
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = error(
            "pools:\n  - name: a\n    provider: sim\n    scaling: {min_nodes: 5, max_nodes: 3}\n",
        );
        assert_eq!(e.path, "pools[0]");
        assert!(
            e.message
                .contains("min_nodes (5) must not exceed max_nodes (3)"),
            "{e}"
        );
        let e = error("pools:\n  a: {provider: sim, max_nodes: 3, cooldown: -5m}\n");
        assert!(e.to_string().contains("pools.a.cooldown"), "{e}");
        assert!(e.message.contains("negative"), "{e}");
        let e = error("pools:\n  a: {provider: sim, max_nodes: 3, cooldown: -5}\n");
        assert!(
            e.to_string().contains("cooldown") && e.message.contains("negative"),
            "{e}"
        );
        let e = error("pools:\n  a: {provider: sim, max_nodes: 3, autoscaling: {type: magic}}\n");
        assert!(e.to_string().contains("pools.a.autoscaling"), "{e}");
        assert!(e.message.contains("unknown variant `magic`"), "{e}");
        let e = error("pools:\n  a: {provider: sim, max_nodes: 3, colour: blue}\n");
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        let e = error(
            "pools:\n  a: {provider: sim, max_nodes: 3, autoscaling: {type: reactive, scale_up_at: 10, scale_down_at: 20}}\n",
        );
        assert!(e.message.contains("autoscaler.scale_down_threshold"), "{e}");
        let e = error("pools:\n  a: {provider: lambda, max_nodes: 3}\n");
        assert_eq!(e.path, "pools[0].provider");
        let e = error("providers:\n  l: {type: lambda}\npools: []\n");
        assert_eq!(e.path, "providers.l.type");
        let e = error("pool: []\n");
        assert_eq!(e.path, "pool");
        let e = error("providers:\n  k: {type: kubernetes, pool_label: 'a b'}\npools: []\n");
        assert_eq!(e.path, "providers.k.pool_label");
        let e = error("providers:\n  k: {type: kubernetes, selector: x}\npools: []\n");
        assert!(e.to_string().contains("selector"), "{e}");
        let e = error("pools:\n  a: {provider: sim, max_nodes: 3, scaling: {autoscaler: {type: reactive, speed: 3}}}\n");
        assert!(e.to_string().contains("speed"), "{e}");
    }

    #[test]
    fn a_kubernetes_provider_names_its_pool_label() {
        let file = PoolsFile::from_yaml(
            "providers:\n  k8s: {type: kubernetes, namespace: ml, pool_label: example.com/gpu-pool}\n\
             pools:\n  a: {provider: k8s, max_nodes: 3}\n",
        )
        .unwrap();
        assert_eq!(
            file.providers["k8s"],
            ProviderConfig::Kubernetes {
                namespace: Some("ml".into()),
                pool_label: "example.com/gpu-pool".into(),
            }
        );
        let file =
            PoolsFile::from_yaml("providers:\n  k8s: {type: kubernetes}\npools: []\n").unwrap();
        assert!(matches!(
            &file.providers["k8s"],
            ProviderConfig::Kubernetes { pool_label, .. } if pool_label == DEFAULT_POOL_LABEL
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("90"), Ok(Seconds(90)));
        assert_eq!(parse_seconds("5m"), Ok(Seconds(300)));
        assert_eq!(parse_seconds("1h30m"), Ok(Seconds(5400)));
        assert_eq!(parse_seconds("1500ms"), Ok(Seconds(2)));
        assert!(parse_seconds("-1s").is_err());
        assert!(parse_seconds("5 minutes").is_err());
        assert!(parse_seconds("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn durations_round_trip(h in 0u64..100, m in 0u64..60, s in 0u64..60) {
            let text = format!("{h}h{m}m{s}s");
            proptest::prop_assert_eq!(parse_seconds(&text), Ok(Seconds(h * 3600 + m * 60 + s)));
        }

        #[test]
        fn parse_seconds_never_panics(text in ".{0,12}") {
            let _ = parse_seconds(&text);
        }
    }
}
