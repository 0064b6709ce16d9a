//! What a scenario run measured: the numbers behind the HTML report and the
//! JSON file (`flotilla simulate --report … --json …`). One struct serves
//! both, so the two cannot disagree.
//!
//! Times are virtual milliseconds since the run started. Everything here is
//! a function of the scenario and the seed, except `wall_ms`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// The scenario's `name`.
    pub scenario: String,
    /// The scenario's `description`.
    pub description: String,
    /// The seed the run used.
    pub seed: u64,
    /// Virtual time covered, ms.
    pub duration_ms: u64,
    /// SHA-256 of the event log (hex): equal seeds give equal hashes.
    pub log_hash: String,
    /// Events recorded in the log.
    pub events: u64,
    /// Wall time the run took, ms (the one number that is not deterministic).
    pub wall_ms: u64,
    /// Per pool: nodes by state over time, markers, circuit-breaker periods.
    pub pools: Vec<PoolSeries>,
    /// Fault → its node's first cordon, seconds, one entry per detected fault.
    pub detect_s: Vec<f64>,
    /// Fault → its replacement registered, seconds, one entry per replacement.
    pub replace_s: Vec<f64>,
    /// Faults by type.
    pub faults: Vec<FaultRow>,
    /// Every assertion (the scenario's `assertions`, `assert` and
    /// `wait_for_status` events) and how it came out.
    pub checks: Vec<CheckResult>,
    /// The scenario's `log` events and notable happenings, in time order.
    pub log: Vec<LogLine>,
}

/// One pool over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSeries {
    /// The pool's name.
    pub name: String,
    /// One sample every `metrics_interval`.
    pub samples: Vec<PoolSample>,
    /// Faults injected and replacements requested, in time order.
    pub markers: Vec<Marker>,
    /// When the circuit breaker was open: `(tripped, closed)`; `closed` is
    /// `None` when it was still open at the end.
    pub breaker_periods: Vec<(u64, Option<u64>)>,
}

/// A pool at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSample {
    /// Virtual ms.
    pub at_ms: u64,
    /// Nodes by status (`provisioning`, `registering`, `active`,
    /// `degraded`, `cordoned`, `draining`, `terminating`); gone nodes
    /// (terminated, failed) are not counted.
    pub counts: BTreeMap<String, u32>,
    /// Serving nodes (active + degraded).
    pub serving: u32,
    /// The size the pool is driven to (the autoscaler's target).
    pub target: u32,
}

/// Something that happened to one node, drawn on the pool's chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Virtual ms.
    pub at_ms: u64,
    /// What.
    pub kind: MarkerKind,
    /// The node.
    pub node: String,
    /// For a fault its type (`xid 79`, `temperature`, …); for a
    /// replacement the new node's id.
    pub detail: String,
}

/// A marker's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// A fault was injected.
    Fault,
    /// A replacement was requested.
    Replacement,
}

/// One row of the fault table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRow {
    /// `xid 79`, `temperature`, `network`, …
    pub fault_type: String,
    /// Injected.
    pub injected: u32,
    /// Whose node was cordoned afterwards.
    pub detected: u32,
    /// Whose node was replaced afterwards.
    pub replaced: u32,
    /// Replaced although the fault needs no replacement (an application
    /// or ignorable XID, a recovered blip): must be 0.
    pub wrongly_replaced: u32,
}

/// An assertion's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Virtual ms it was checked at.
    pub at_ms: u64,
    /// What was checked (`node_status gpu-1`, `node_count all`, …).
    pub what: String,
    /// What the scenario expected.
    pub expected: String,
    /// What the run showed.
    pub seen: String,
    /// Whether it held.
    pub passed: bool,
}

/// A line of the run's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Virtual ms.
    pub at_ms: u64,
    /// The message.
    pub message: String,
}

impl SimReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Faults injected, all types together.
    pub fn faults_injected(&self) -> u64 {
        self.faults.iter().map(|f| u64::from(f.injected)).sum()
    }

    /// Replacements requested, all pools together (their markers).
    pub fn replacements_requested(&self) -> usize {
        self.pools
            .iter()
            .flat_map(|p| &p.markers)
            .filter(|m| m.kind == MarkerKind::Replacement)
            .count()
    }

    /// The `q` quantile (0..=1) of `values`, nearest rank; 0 when empty.
    pub fn quantile(values: &[f64], q: f64) -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize]
    }
}
