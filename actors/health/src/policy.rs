//! Health policy: which observations matter, and how a node's verdict
//! moves so that one blip never flaps it.
//!
//! A policy file (YAML) has `rules` (first match wins), `thermal` and
//! `recovery`:
//!
//! ```yaml
//! rules:
//!   - {name: fell_off_bus, xids: [79], action: replace}
//!   - {name: reset_class, xids: [46, 62, 95], action: reset, replace_after: {count: 3, window: 1h}}
//!   - {name: hot, condition: "event.metrics.temperature >= 95", result: unhealthy}   # Navarch style
//! thermal: {margin_c: 5, bad: 3, of: 5}
//! recovery: {probation: 3}
//! ```
//!
//! A rule matches by `xids`, by `events` (`ecc_dbe`, `row_remap_failure`,
//! ...) or by a Navarch `condition` ([`super::condition`]); it says an
//! `action` (`ignore`, `degrade`, `reset`, `replace`) or a Navarch `result`
//! (`healthy`, `degraded`, `unhealthy` — the last means replace). A file
//! with Navarch's `rules: [{name, condition, result}]` imports as is. The
//! user's rules come before NVIDIA's XID catalog ([`default_rules`]), which
//! always applies last: application XIDs (13, 31, 32, 68, 69, 94) and
//! ignorable ones (43, 63, 92) never mark a node unhealthy, reset-class
//! XIDs cordon for a reset and replace only when they recur, 79, remap
//! failures and double-bit ECC replace. `protect_application_xids` (on by
//! default) keeps imported rules from replacing nodes for application
//! XIDs — Navarch's default policy does exactly that.
//!
//! The evaluator ([`HealthEvaluator`]) turns samples into verdicts:
//! thermal trouble is a margin below the device's slowdown threshold in
//! `bad` of the last `of` samples (N-of-M); an unhealthy or degraded node
//! needs `probation` clean evaluations in a row to be healthy again
//! (hysteresis); a replace-class fault never clears by itself.

use super::condition::{EventFields, Expr, Field, Value};
use super::source::{GpuEvent, Sample};
use flotilla_messages::fleet::{ConfigError, Seconds};
use flotilla_messages::health::{GpuTelemetry, HealthAction, Verdict};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Nothing.
    Ignore,
    /// The node is degraded (investigate), still serving.
    Degrade,
    /// Cordon and reset the GPU; the node may come back.
    Reset,
    /// Replace the node.
    Replace,
}

/// A reset-class fault turns into a replacement when it recurs this often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    /// Occurrences (this one included).
    pub count: u32,
    /// Within this window.
    pub window: Seconds,
}

/// How a rule recognises an observation.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// XID codes.
    Xids(BTreeSet<u32>),
    /// Event types (`ecc_dbe`, `row_remap_failure`, ...).
    Events(BTreeSet<String>),
    /// A Navarch condition.
    Condition(Expr),
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name (reported as the reason).
    pub name: String,
    /// What it matches.
    pub matcher: Matcher,
    /// What it does.
    pub action: RuleAction,
    /// For `reset`: when to replace instead.
    pub replace_after: Option<Recurrence>,
}

/// Thermal settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalSettings {
    /// A sample is bad when a GPU is within this many °C of its slowdown threshold.
    #[serde(default = "default_margin")]
    pub margin_c: f64,
    /// Bad samples ...
    #[serde(default = "default_bad")]
    pub bad: u32,
    /// ... out of the last this many make the node unhealthy.
    #[serde(default = "default_of")]
    pub of: u32,
    /// The slowdown threshold when the device does not report one.
    #[serde(default = "default_slowdown")]
    pub default_slowdown_c: f64,
}

fn default_margin() -> f64 {
    5.0
}
fn default_bad() -> u32 {
    3
}
fn default_of() -> u32 {
    5
}
fn default_slowdown() -> f64 {
    89.0
}
fn default_probation() -> u32 {
    3
}
fn default_true() -> bool {
    true
}

impl Default for ThermalSettings {
    fn default() -> Self {
        ThermalSettings {
            margin_c: default_margin(),
            bad: default_bad(),
            of: default_of(),
            default_slowdown_c: default_slowdown(),
        }
    }
}

/// Recovery settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySettings {
    /// Clean evaluations in a row before an unhealthy or degraded node is healthy.
    #[serde(default = "default_probation")]
    pub probation: u32,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings {
            probation: default_probation(),
        }
    }
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// The user's rules, then the default catalog.
    pub rules: Vec<Rule>,
    /// Thermal windows.
    pub thermal: ThermalSettings,
    /// Hysteresis.
    pub recovery: RecoverySettings,
    /// Application and ignorable XIDs never count against a node.
    pub protect_application_xids: bool,
}

/// XIDs NVIDIA classes as application faults (restart the app).
pub const APPLICATION_XIDS: [u32; 6] = [13, 31, 32, 68, 69, 94];
/// XIDs NVIDIA says to ignore.
pub const IGNORABLE_XIDS: [u32; 3] = [43, 63, 92];
/// Reset-class XIDs.
pub const RESET_XIDS: [u32; 8] = [46, 62, 95, 109, 119, 120, 140, 158];
/// XIDs that need the node replaced: 79 (fell off the bus), 48 (double-bit
/// ECC), 64 (row remapper failure).
pub const REPLACE_XIDS: [u32; 3] = [79, 48, 64];
/// XIDs to investigate (45 preemptive cleanup, 74 NVLink).
pub const INVESTIGATE_XIDS: [u32; 2] = [45, 74];

/// NVIDIA's XID catalog as rules.
pub fn default_rules() -> Vec<Rule> {
    let xids = |codes: &[u32]| Matcher::Xids(codes.iter().copied().collect());
    let events = |names: &[&str]| Matcher::Events(names.iter().map(|s| s.to_string()).collect());
    let rule = |name: &str, matcher, action, replace_after| Rule {
        name: name.into(),
        matcher,
        action,
        replace_after,
    };
    vec![
        rule(
            "xid_application_error",
            xids(&APPLICATION_XIDS),
            RuleAction::Ignore,
            None,
        ),
        rule(
            "xid_ignorable",
            xids(&IGNORABLE_XIDS),
            RuleAction::Ignore,
            None,
        ),
        rule(
            "xid_replace",
            xids(&REPLACE_XIDS),
            RuleAction::Replace,
            None,
        ),
        rule(
            "xid_gpu_reset",
            xids(&RESET_XIDS),
            RuleAction::Reset,
            Some(Recurrence {
                count: 3,
                window: Seconds(3600),
            }),
        ),
        rule(
            "xid_investigate",
            xids(&INVESTIGATE_XIDS),
            RuleAction::Degrade,
            None,
        ),
        rule(
            "ecc_double_bit",
            events(&["ecc_dbe", "row_remap_failure"]),
            RuleAction::Replace,
            None,
        ),
        rule(
            "row_remap_pending",
            events(&["row_remap_pending", "recovery_action"]),
            RuleAction::Reset,
            None,
        ),
        rule(
            "ecc_single_bit",
            events(&["ecc_sbe"]),
            RuleAction::Ignore,
            None,
        ),
    ]
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            rules: default_rules(),
            thermal: ThermalSettings::default(),
            recovery: RecoverySettings::default(),
            protect_application_xids: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<RuleWire>,
    #[serde(default)]
    thermal: ThermalSettings,
    #[serde(default)]
    recovery: RecoverySettings,
    #[serde(default = "default_true")]
    protect_application_xids: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleWire {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    xids: Vec<u32>,
    #[serde(default)]
    events: Vec<String>,
    condition: Option<String>,
    action: Option<RuleAction>,
    result: Option<String>,
    replace_after: Option<Recurrence>,
}

const EVENT_TYPES: &[&str] = &[
    "xid",
    "ecc_dbe",
    "ecc_sbe",
    "row_remap_failure",
    "row_remap_pending",
    "recovery_action",
];

impl RuleWire {
    fn into_rule(self) -> Result<Rule, String> {
        let _ = self.description;
        let kinds = [
            !self.xids.is_empty(),
            !self.events.is_empty(),
            self.condition.is_some(),
        ];
        let matcher = match kinds {
            [true, false, false] => Matcher::Xids(self.xids.into_iter().collect()),
            [false, true, false] => {
                if let Some(bad) = self
                    .events
                    .iter()
                    .find(|e| !EVENT_TYPES.contains(&e.as_str()))
                {
                    return Err(format!(
                        "events: unknown event type {bad:?}: expected one of {}",
                        EVENT_TYPES.join(", ")
                    ));
                }
                Matcher::Events(self.events.into_iter().collect())
            }
            [false, false, true] => {
                let text = self.condition.unwrap_or_default();
                Matcher::Condition(
                    Expr::parse(&text).map_err(|e| format!("condition {text:?}: {e}"))?,
                )
            }
            _ => return Err("give exactly one of xids, events or condition".into()),
        };
        let action = match (self.action, self.result.as_deref()) {
            (Some(a), None) => a,
            (None, Some("healthy")) => RuleAction::Ignore,
            (None, Some("degraded")) => RuleAction::Degrade,
            (None, Some("unhealthy")) => RuleAction::Replace,
            (None, Some(other)) => {
                return Err(format!(
                    "result: {other:?} is not healthy, degraded or unhealthy"
                ))
            }
            _ => {
                return Err(
                    "give exactly one of action (ignore, degrade, reset, replace) or result".into(),
                )
            }
        };
        if self.replace_after.is_some_and(|r| r.count == 0) {
            return Err("replace_after.count: must be at least 1".into());
        }
        Ok(Rule {
            name: self.name,
            matcher,
            action,
            replace_after: self.replace_after,
        })
    }
}

impl HealthPolicy {
    /// Parses a policy file; errors name the rule and the field.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let file: PolicyFile = serde_path_to_error::deserialize(
            serde_yaml::Deserializer::from_str(text),
        )
        .map_err(|e| ConfigError {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
        let t = file.thermal;
        if t.bad == 0 || t.of == 0 || t.bad > t.of {
            return Err(ConfigError {
                path: "thermal".into(),
                message: format!("bad ({}) must be in 1..=of ({})", t.bad, t.of),
            });
        }
        if !(t.margin_c.is_finite() && t.default_slowdown_c.is_finite()) {
            return Err(ConfigError {
                path: "thermal.margin_c".into(),
                message: "must be finite".into(),
            });
        }
        let mut rules = Vec::new();
        for (i, wire) in file.rules.into_iter().enumerate() {
            let name = wire.name.clone();
            rules.push(wire.into_rule().map_err(|message| ConfigError {
                path: format!("rules[{i}] ({name})"),
                message,
            })?);
        }
        rules.extend(default_rules());
        Ok(HealthPolicy {
            rules,
            thermal: file.thermal,
            recovery: file.recovery,
            protect_application_xids: file.protect_application_xids,
        })
    }

    /// The first rule matching `observation`, and its action.
    fn classify(&self, observation: &Observation) -> Option<(&Rule, RuleAction)> {
        let rule = self
            .rules
            .iter()
            .find(|r| match (&r.matcher, observation) {
                (Matcher::Xids(codes), Observation::Event(GpuEvent::Xid { code, .. })) => {
                    codes.contains(code)
                }
                (Matcher::Events(kinds), Observation::Event(e)) => kinds.contains(e.event_type()),
                (Matcher::Condition(expr), o) => expr.matches(o),
                _ => false,
            })?;
        let protected = self.protect_application_xids
            && matches!(observation, Observation::Event(GpuEvent::Xid { code, .. })
                if APPLICATION_XIDS.contains(code) || IGNORABLE_XIDS.contains(code));
        let action = if protected {
            RuleAction::Ignore
        } else {
            rule.action
        };
        Some((rule, action))
    }
}

/// An observation rules are matched against.
enum Observation<'a> {
    Event(&'a GpuEvent),
    Thermal(&'a GpuTelemetry),
}

impl EventFields for Observation<'_> {
    fn field(&self, field: Field) -> Value {
        let num = |v: Option<f64>| v.map_or(Value::Missing, Value::Num);
        match (self, field) {
            (Observation::Event(e), Field::EventType) => Value::Str(e.event_type().into()),
            (Observation::Thermal(_), Field::EventType) => Value::Str("thermal".into()),
            (Observation::Event(e), Field::GpuIndex) => Value::Num(f64::from(e.gpu())),
            (Observation::Thermal(t), Field::GpuIndex) => Value::Num(f64::from(t.index)),
            (Observation::Event(GpuEvent::Xid { code, .. }), Field::XidCode) => {
                Value::Num(f64::from(*code))
            }
            (Observation::Thermal(t), Field::Temperature) => num(t.temperature_c),
            (Observation::Event(GpuEvent::EccDbe { count, .. }), Field::EccDbeCount) => {
                Value::Num(*count as f64)
            }
            (Observation::Event(GpuEvent::EccSbe { count, .. }), Field::EccSbeCount) => {
                Value::Num(*count as f64)
            }
            _ => Value::Missing,
        }
    }
}

/// One evaluation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The verdict after windows and hysteresis.
    pub verdict: Verdict,
    /// What to do.
    pub action: HealthAction,
    /// Why (rule names).
    pub reasons: Vec<String>,
    /// XID codes in this sample.
    pub xids: Vec<u32>,
}

/// What one sample says before hysteresis, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Raw {
    Clean,
    Degraded,
    Reset,
    Replace,
}

/// Folds samples into verdicts for one node.
#[derive(Debug, Clone)]
pub struct HealthEvaluator {
    policy: HealthPolicy,
    thermal: VecDeque<bool>,
    resets: HashMap<String, VecDeque<u64>>,
    verdict: Verdict,
    action: HealthAction,
    reasons: Vec<String>,
    sticky: bool,
    clean_streak: u32,
    /// Whether any rule can match a thermal observation (only conditions can).
    thermal_rules: bool,
}

impl HealthEvaluator {
    /// An evaluator starting healthy.
    pub fn new(policy: HealthPolicy) -> Self {
        let thermal_rules = policy
            .rules
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Condition(_)));
        HealthEvaluator {
            thermal_rules,
            policy,
            thermal: VecDeque::new(),
            resets: HashMap::new(),
            verdict: Verdict::Healthy,
            action: HealthAction::None,
            reasons: Vec::new(),
            sticky: false,
            clean_streak: 0,
        }
    }

    /// Evaluates one sample.
    pub fn evaluate(&mut self, sample: &Sample) -> Evaluation {
        let mut raw = Raw::Clean;
        let mut reasons = BTreeSet::new();
        let mut xids = Vec::new();
        for event in &sample.events {
            if let GpuEvent::Xid { code, .. } = event {
                xids.push(*code);
            }
            let (level, reason) = self.classify_event(event, sample.at);
            if level > Raw::Clean {
                reasons.insert(reason);
            }
            raw = raw.max(level);
        }
        let (thermal, thermal_reasons) = self.thermal(sample);
        raw = raw.max(thermal);
        reasons.extend(thermal_reasons);
        self.fold(raw, reasons.into_iter().collect());
        Evaluation {
            verdict: self.verdict,
            action: self.action,
            reasons: self.reasons.clone(),
            xids,
        }
    }

    fn classify_event(&mut self, event: &GpuEvent, now: u64) -> (Raw, String) {
        let Some((rule, action)) = self.policy.classify(&Observation::Event(event)) else {
            // Not in the catalog: look, but do not take the node out.
            let reason = match event {
                GpuEvent::Xid { code, .. } => format!("xid_{code}_unclassified"),
                other => format!("{}_unclassified", other.event_type()),
            };
            return (Raw::Degraded, reason);
        };
        let name = match event {
            GpuEvent::Xid { code, .. } => format!("{}:xid_{code}", rule.name),
            _ => rule.name.clone(),
        };
        let level = match action {
            RuleAction::Ignore => Raw::Clean,
            RuleAction::Degrade => Raw::Degraded,
            RuleAction::Replace => Raw::Replace,
            RuleAction::Reset => match rule.replace_after {
                None => Raw::Reset,
                Some(r) => {
                    let seen = self.resets.entry(rule.name.clone()).or_default();
                    seen.push_back(now);
                    while seen.front().is_some_and(|&t| t + r.window.millis() <= now) {
                        seen.pop_front();
                    }
                    if seen.len() as u32 >= r.count {
                        Raw::Replace
                    } else {
                        Raw::Reset
                    }
                }
            },
        };
        (level, name)
    }

    /// The thermal window after this sample: N-of-M bad samples make the
    /// node unhealthy (a reset-like, recoverable verdict).
    fn thermal(&mut self, sample: &Sample) -> (Raw, Vec<String>) {
        let t = self.policy.thermal;
        let mut bad = false;
        let mut degraded = false;
        for gpu in &sample.gpus {
            let Some(temp) = gpu.temperature_c else {
                continue;
            };
            let slowdown = gpu.slowdown_c.unwrap_or(t.default_slowdown_c);
            bad |= slowdown - temp < t.margin_c;
            if !self.thermal_rules {
                continue;
            }
            match self
                .policy
                .classify(&Observation::Thermal(gpu))
                .map(|(_, a)| a)
            {
                Some(RuleAction::Reset | RuleAction::Replace) => bad = true,
                Some(RuleAction::Degrade) => degraded = true,
                _ => {}
            }
        }
        self.thermal.push_back(bad);
        while self.thermal.len() > t.of as usize {
            self.thermal.pop_front();
        }
        let count = self.thermal.iter().filter(|b| **b).count() as u32;
        if count >= t.bad {
            (
                Raw::Reset,
                vec![format!("thermal_margin_{}_of_{}", count, t.of)],
            )
        } else if degraded {
            (Raw::Degraded, vec!["thermal_rule".into()])
        } else {
            (Raw::Clean, vec![])
        }
    }

    fn fold(&mut self, raw: Raw, reasons: Vec<String>) {
        match raw {
            Raw::Replace => {
                self.sticky = true;
                self.set(Verdict::Unhealthy, HealthAction::Replace, reasons);
            }
            _ if self.sticky => {}
            Raw::Reset => self.set(Verdict::Unhealthy, HealthAction::ResetGpu, reasons),
            Raw::Degraded if self.verdict == Verdict::Unhealthy => self.clean_streak = 0,
            Raw::Degraded => self.set(Verdict::Degraded, HealthAction::None, reasons),
            Raw::Clean if self.verdict == Verdict::Healthy => {}
            Raw::Clean => {
                self.clean_streak += 1;
                if self.clean_streak >= self.policy.recovery.probation {
                    self.set(Verdict::Healthy, HealthAction::None, vec![]);
                }
            }
        }
    }

    fn set(&mut self, verdict: Verdict, action: HealthAction, reasons: Vec<String>) {
        self.verdict = verdict;
        self.action = action;
        self.reasons = reasons;
        self.clean_streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(temp: f64) -> GpuTelemetry {
        GpuTelemetry {
            index: 0,
            temperature_c: Some(temp),
            slowdown_c: Some(89.0),
            ..Default::default()
        }
    }

    fn sample(at: u64, temp: f64, events: Vec<GpuEvent>) -> Sample {
        Sample {
            at,
            gpus: vec![gpu(temp)],
            events,
        }
    }

    fn xid(code: u32) -> Vec<GpuEvent> {
        vec![GpuEvent::Xid { gpu: 0, code }]
    }

    fn run(policy: HealthPolicy, samples: &[Sample]) -> Vec<Evaluation> {
        let mut e = HealthEvaluator::new(policy);
        samples.iter().map(|s| e.evaluate(s)).collect()
    }

    #[test]
    fn application_and_ignorable_xids_never_count() {
        for code in APPLICATION_XIDS.into_iter().chain(IGNORABLE_XIDS) {
            let out = run(HealthPolicy::default(), &[sample(0, 60.0, xid(code))]);
            assert_eq!(out[0].verdict, Verdict::Healthy, "xid {code}");
            assert_eq!(out[0].xids, vec![code]);
        }
    }

    #[test]
    fn xid_79_replaces_and_stays() {
        let out = run(
            HealthPolicy::default(),
            &[
                sample(0, 60.0, xid(79)),
                sample(1, 60.0, vec![]),
                sample(2, 60.0, vec![]),
                sample(3, 60.0, vec![]),
            ],
        );
        assert!(out
            .iter()
            .all(|e| e.verdict == Verdict::Unhealthy && e.action == HealthAction::Replace));
        assert_eq!(out[3].reasons, vec!["xid_replace:xid_79"]);
    }

    #[test]
    fn reset_class_xids_replace_only_when_they_recur() {
        let out = run(
            HealthPolicy::default(),
            &[
                sample(0, 60.0, xid(62)),
                sample(1, 60.0, vec![]),
                sample(2, 60.0, vec![]),
                sample(3, 60.0, vec![]),
                sample(4, 60.0, xid(62)),
                sample(5, 60.0, xid(119)),
                sample(6, 60.0, xid(62)),
            ],
        );
        assert_eq!(
            (out[0].verdict, out[0].action),
            (Verdict::Unhealthy, HealthAction::ResetGpu)
        );
        assert_eq!(
            out[3].verdict,
            Verdict::Healthy,
            "probation of 3 clean evaluations"
        );
        assert_eq!(out[4].action, HealthAction::ResetGpu);
        assert_eq!(
            out[5].action,
            HealthAction::Replace,
            "the third reset-class XID within an hour"
        );
        assert_eq!(out[6].action, HealthAction::Replace, "and it stays");
    }

    #[test]
    fn a_thermal_blip_shorter_than_the_window_does_nothing() {
        let temps = [60.0, 86.0, 86.0, 60.0, 60.0, 60.0, 86.0, 60.0];
        let samples: Vec<Sample> = temps
            .iter()
            .enumerate()
            .map(|(i, t)| sample(i as u64, *t, vec![]))
            .collect();
        assert!(run(HealthPolicy::default(), &samples)
            .iter()
            .all(|e| e.verdict == Verdict::Healthy));
        let sustained: Vec<Sample> = (0..5).map(|i| sample(i, 86.0, vec![])).collect();
        let out = run(HealthPolicy::default(), &sustained);
        assert_eq!(out[1].verdict, Verdict::Healthy);
        assert_eq!(
            (out[2].verdict, out[2].action),
            (Verdict::Unhealthy, HealthAction::ResetGpu)
        );
    }

    #[test]
    fn margin_is_relative_to_the_device_threshold() {
        let mut cool_card = gpu(80.0);
        cool_card.slowdown_c = Some(100.0);
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample {
                at: i,
                gpus: vec![cool_card.clone()],
                events: vec![],
            })
            .collect();
        assert!(run(HealthPolicy::default(), &samples)
            .iter()
            .all(|e| e.verdict == Verdict::Healthy));
    }

    #[test]
    fn navarch_rules_import_and_application_xids_stay_protected() {
        let navarch = r#"
rules:
  - name: fatal-xid
    description: Fatal XID errors
    condition: 'event.event_type == "xid" && event.metrics.xid_code in [13, 31, 79]'
    result: unhealthy
  - name: ecc-sbe
    condition: event.event_type == "ecc_sbe" && event.metrics.ecc_sbe_count > 100
    result: degraded
"#;
        let policy = HealthPolicy::from_yaml(navarch).unwrap();
        assert_eq!(
            run(policy.clone(), &[sample(0, 60.0, xid(13))])[0].verdict,
            Verdict::Healthy
        );
        let out = run(policy.clone(), &[sample(0, 60.0, xid(79))]);
        assert_eq!(out[0].reasons, vec!["fatal-xid:xid_79"]);
        let sbe = vec![GpuEvent::EccSbe { gpu: 0, count: 500 }];
        assert_eq!(
            run(policy, &[sample(0, 60.0, sbe)])[0].verdict,
            Verdict::Degraded
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let e = HealthPolicy::from_yaml(
            "rules:\n  - {name: hot, condition: 'event.metrics.temp > 90', result: unhealthy}\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "rules[0] (hot)");
        assert!(
            e.message.contains("unknown field \"event.metrics.temp\""),
            "{e}"
        );
        let e = HealthPolicy::from_yaml("rules:\n  - {name: x, xids: [1], result: sick}\n")
            .unwrap_err();
        assert!(e.message.contains("sick"), "{e}");
        let e = HealthPolicy::from_yaml("rules:\n  - {name: x, xids: [1], action: explode}\n")
            .unwrap_err();
        assert!(e.to_string().contains("rules[0].action"), "{e}");
        let e = HealthPolicy::from_yaml("thermal: {bad: 6, of: 5}\n").unwrap_err();
        assert_eq!(e.path, "thermal");
        let e = HealthPolicy::from_yaml("rulez: []\n").unwrap_err();
        assert!(e.message.contains("rulez"), "{e}");
    }
}
