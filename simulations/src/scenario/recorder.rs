//! Turns what happened into the report's numbers ([`SimReport`]), as it
//! happens: nothing here keeps the event log, so a day of 50,000 nodes
//! costs memory for its samples and its open faults only.
//!
//! - **time to detect**: a node's first harmful fault (its first fault if
//!   all were [benign](super::chaos::FaultSpec::benign)) → the pool
//!   cordoning it for its health (`unhealthy` or `gpu_reset`);
//! - **time to replace**: that fault → the node's replacement registered;
//! - per fault type: injected; detected and replaced (its node was
//!   cordoned for its health, or replaced, afterwards — credited to the
//!   node's harmful faults, or to all of them when none was harmful); wrongly
//!   replaced (the node got a replacement although every fault it had was
//!   benign).

use super::chaos::FaultSpec;
use super::report::{
    CheckResult, FaultRow, LogLine, Marker, MarkerKind, PoolSample, PoolSeries, SimReport,
};
use super::world::{Recorded, World};
use flotilla_messages::provisioner::{ProvisionerEvent as E, RemovalReason};
use flotilla_provisioner::NodeStatus;
use std::collections::{BTreeMap, HashMap};

/// The faults a node has had, and what the pool did about them.
#[derive(Default)]
struct OpenFaults {
    first_at: u64,
    harmful_at: Option<u64>,
    faults: Vec<(String, bool)>,
    detected: bool,
    replaced: bool,
}

impl OpenFaults {
    /// When the fault the pool should act on happened.
    fn since(&self) -> u64 {
        self.harmful_at.unwrap_or(self.first_at)
    }

    fn all_benign(&self) -> bool {
        self.harmful_at.is_none()
    }

    /// The faults a detection or replacement is credited to.
    fn credited(&self) -> impl Iterator<Item = &String> {
        let all = self.all_benign();
        self.faults
            .iter()
            .filter(move |(_, benign)| all || !benign)
            .map(|(label, _)| label)
    }
}

/// Collects a run's report.
pub struct Recorder {
    report: SimReport,
    open: HashMap<String, OpenFaults>,
    /// Replacement → (the node it replaces' first fault time).
    replacing: HashMap<String, u64>,
    rows: BTreeMap<String, FaultRow>,
}

impl Recorder {
    /// A recorder for pools `names`.
    pub fn new(names: &[String]) -> Self {
        let pools = names
            .iter()
            .map(|name| PoolSeries {
                name: name.clone(),
                ..PoolSeries::default()
            })
            .collect();
        Recorder {
            report: SimReport {
                pools,
                ..SimReport::default()
            },
            open: HashMap::new(),
            replacing: HashMap::new(),
            rows: BTreeMap::new(),
        }
    }

    /// A fault was injected into `node` of `pool` at `at`.
    pub fn fault(&mut self, pool: usize, node: &str, fault: &FaultSpec, at: u64) {
        let label = fault.label();
        self.rows
            .entry(label.clone())
            .or_insert_with(|| FaultRow {
                fault_type: label.clone(),
                ..FaultRow::default()
            })
            .injected += 1;
        let open = self.open.entry(node.to_string()).or_insert(OpenFaults {
            first_at: at,
            ..OpenFaults::default()
        });
        open.faults.push((label.clone(), fault.benign()));
        if !fault.benign() {
            open.harmful_at.get_or_insert(at);
        }
        self.report.pools[pool].markers.push(Marker {
            at_ms: at,
            kind: MarkerKind::Fault,
            node: node.to_string(),
            detail: label,
        });
    }

    /// Events the world recorded.
    pub fn observe(&mut self, recorded: &[Recorded]) {
        for r in recorded {
            self.event(r);
        }
    }

    fn event(&mut self, r: &Recorded) {
        match &r.event {
            E::NodeCordoned {
                node_id,
                reason: RemovalReason::Unhealthy | RemovalReason::GpuReset,
                ..
            } => {
                if let Some(open) = self.open.get_mut(node_id).filter(|o| !o.detected) {
                    open.detected = true;
                    self.report.detect_s.push(seconds(r.at - open.since()));
                    for label in open.credited() {
                        if let Some(row) = self.rows.get_mut(label) {
                            row.detected += 1;
                        }
                    }
                }
            }
            E::NodeRequested {
                node_id,
                replaces: Some(old),
                ..
            } => self.replacement(r, node_id, old),
            E::NodeRegistered { node_id, .. } => {
                if let Some(first) = self.replacing.remove(node_id) {
                    self.report.replace_s.push(seconds(r.at - first));
                }
            }
            E::CircuitBreakerTripped { .. } => {
                self.report.pools[r.pool].breaker_periods.push((r.at, None));
            }
            E::CircuitBreakerClosed { .. } => {
                if let Some(open) = self.report.pools[r.pool].breaker_periods.last_mut() {
                    open.1.get_or_insert(r.at);
                }
            }
            E::NodeTerminated { node_id, .. } => {
                self.open.remove(node_id);
            }
            _ => {}
        }
    }

    fn replacement(&mut self, r: &Recorded, new: &str, old: &str) {
        self.report.pools[r.pool].markers.push(Marker {
            at_ms: r.at,
            kind: MarkerKind::Replacement,
            node: old.to_string(),
            detail: new.to_string(),
        });
        let Some(open) = self.open.get_mut(old) else {
            return;
        };
        self.replacing.insert(new.to_string(), open.since());
        // A replacement that failed to come up is asked for again: count
        // the node once.
        if std::mem::replace(&mut open.replaced, true) {
            return;
        }
        let wrongly = open.all_benign();
        for label in open.credited() {
            if let Some(row) = self.rows.get_mut(label) {
                row.replaced += 1;
                row.wrongly_replaced += u32::from(wrongly);
            }
        }
    }

    /// Samples every pool's counts now.
    pub fn sample(&mut self, world: &World) {
        let at_ms = world.now();
        for (i, series) in self.report.pools.iter_mut().enumerate() {
            let counts: BTreeMap<String, u32> = NodeStatus::ALL
                .iter()
                .filter(|s| !s.gone())
                .map(|s| (s.as_str().to_string(), world.count(i, *s)))
                .filter(|(_, n)| *n > 0)
                .collect();
            let state = world.pool(i).state();
            series.samples.push(PoolSample {
                at_ms,
                counts,
                serving: state.map_or(0, |s| s.serving_count()),
                target: state.map_or(0, |s| s.desired),
            });
        }
    }

    /// Whether pool `pool`'s circuit breaker tripped so far.
    pub fn breaker_tripped(&self, pool: usize) -> bool {
        !self.report.pools[pool].breaker_periods.is_empty()
    }

    /// A check's outcome.
    pub fn check(&mut self, check: CheckResult) {
        self.report.checks.push(check);
    }

    /// A log line.
    pub fn log(&mut self, at_ms: u64, message: impl Into<String>) {
        self.report.log.push(LogLine {
            at_ms,
            message: message.into(),
        });
    }

    /// The report, with the run's totals.
    pub fn finish(mut self, world: &World) -> SimReport {
        self.report.faults = self.rows.into_values().collect();
        self.report.log_hash = world.log_hash();
        self.report.events = world.events();
        self.report.duration_ms = world.now();
        self.report
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}
