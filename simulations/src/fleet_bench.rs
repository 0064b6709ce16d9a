//! The fleet chaos benchmark: Navarch's largest stress scenario (5,000
//! nodes, 30 minutes, 50 failures per minute per 1,000 nodes) on virtual
//! time, reported as time-to-detect and time-to-replace.
//!
//! Faults are drawn from a seeded generator over an XID mix that includes
//! application and ignorable XIDs (which must never replace a node),
//! replace-class XIDs (79, 48), reset-class XIDs (62) and sustained heat.
//! `cargo bench -p flotilla-simulations --bench fleet` prints the table.

use crate::fleet::{FleetSim, WorldSettings};
use flotilla_health::{FaultKind, GpuEvent};
use flotilla_health::{HealthPolicy, APPLICATION_XIDS, IGNORABLE_XIDS};
use flotilla_messages::fleet::PoolsFile;
use flotilla_messages::provisioner::ProvisionerEvent as E;
use flotilla_provisioner::NodeStatus;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// A chaos run's settings.
#[derive(Debug, Clone, Copy)]
pub struct ChaosSettings {
    /// Pool size.
    pub nodes: u32,
    /// Virtual minutes after the pool is up.
    pub minutes: u64,
    /// Failures per minute per 1,000 nodes (Navarch's unit).
    pub failure_rate: f64,
    /// Seeds the faults.
    pub seed: u64,
}

/// What a chaos run measured.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// Faults injected, by kind.
    pub injected: BTreeMap<String, u32>,
    /// Replacements requested.
    pub replacements: usize,
    /// Nodes taken out although every fault they had was application-level
    /// or ignorable (must be 0).
    pub wrongly_replaced: usize,
    /// Circuit-breaker trips.
    pub breaker_trips: usize,
    /// First hardware fault → cordon, seconds of virtual time (p50, p99).
    pub detect_s: (f64, f64),
    /// First hardware fault → replacement registered, seconds (p50, p99).
    pub replace_s: (f64, f64),
    /// Serving nodes at the end.
    pub serving_at_end: usize,
    /// Wall time of the run.
    pub wall: Duration,
    /// Events recorded.
    pub events: usize,
}

/// The XID mix: (weight, what).
fn draw_fault(rng: &mut ChaCha8Rng) -> (&'static str, FaultKind) {
    let xid = |code| FaultKind::Event {
        event: GpuEvent::Xid { gpu: 0, code },
    };
    match rng.random_range(0..100) {
        0..=19 => ("xid_13", xid(13)),
        20..=29 => ("xid_31", xid(31)),
        30..=39 => ("xid_94", xid(94)),
        40..=44 => ("xid_43", xid(43)),
        45..=64 => ("xid_79", xid(79)),
        65..=74 => ("xid_48", xid(48)),
        75..=89 => ("xid_62", xid(62)),
        _ => (
            "thermal",
            FaultKind::Temperature {
                gpu: 1,
                celsius: 88.0,
                duration: None,
            },
        ),
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Runs the scenario.
pub fn run_chaos(s: ChaosSettings) -> ChaosReport {
    let started = Instant::now();
    let yaml = format!(
        "pools:\n  chaos:\n    provider: sim\n    min_nodes: {n}\n    max_nodes: {n}\n    health: {{unhealthy_threshold: 2, boot_grace: 60s, heartbeat_timeout: 2m}}\n    replacement: {{surge: {surge}, drain_mode: evict}}\n",
        n = s.nodes,
        surge = (s.nodes / 10).max(1),
    );
    let config = PoolsFile::from_yaml(&yaml)
        .expect("chaos pool")
        .pools
        .remove(0);
    let mut sim =
        FleetSim::new(config, WorldSettings::default(), HealthPolicy::default()).expect("pool");
    sim.run_for(5 * 60_000).expect("bring-up");
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut report = ChaosReport::default();
    let mut first_fault: HashMap<String, u64> = HashMap::new();
    let mut harmful: HashSet<String> = HashSet::new();
    let step = sim.settings.step_ms;
    let per_step = s.failure_rate * f64::from(s.nodes) / 1000.0 * step as f64 / 60_000.0;
    let mut owed = 0.0;
    let end = sim.now() + s.minutes * 60_000;
    while sim.now() < end {
        owed += per_step;
        let serving = sim.nodes_in(NodeStatus::Active);
        while owed >= 1.0 && !serving.is_empty() {
            owed -= 1.0;
            let node = &serving[rng.random_range(0..serving.len())];
            let (kind, fault) = draw_fault(&mut rng);
            *report.injected.entry(kind.to_string()).or_default() += 1;
            let harmless = matches!(&fault, FaultKind::Event { event: GpuEvent::Xid { code, .. } }
                if APPLICATION_XIDS.contains(code) || IGNORABLE_XIDS.contains(code));
            if !harmless {
                harmful.insert(node.clone());
                first_fault.entry(node.clone()).or_insert(sim.now());
            }
            sim.inject(node, fault);
        }
        sim.run_for(step).expect("step");
    }
    measure(&sim, &first_fault, &harmful, &mut report);
    report.wall = started.elapsed();
    report
}

fn measure(
    sim: &FleetSim,
    first_fault: &HashMap<String, u64>,
    harmful: &HashSet<String>,
    report: &mut ChaosReport,
) {
    let mut registered: HashMap<&str, u64> = HashMap::new();
    let mut replacement_of: HashMap<&str, &str> = HashMap::new();
    let mut detect = Vec::new();
    let mut detected: HashSet<&str> = HashSet::new();
    for r in &sim.trace {
        match &r.event {
            E::NodeCordoned { node_id, .. } => {
                // Time to detect: the fault → the node's first cordon.
                if let Some(t) = first_fault
                    .get(node_id)
                    .filter(|_| detected.insert(node_id))
                {
                    detect.push((r.at - t) as f64 / 1000.0);
                }
                if !harmful.contains(node_id) {
                    report.wrongly_replaced += 1;
                }
            }
            E::NodeRequested {
                node_id,
                replaces: Some(old),
                ..
            } => {
                report.replacements += 1;
                replacement_of.insert(node_id, old);
            }
            E::NodeRegistered { node_id, at, .. } => {
                registered.insert(node_id, *at);
            }
            E::CircuitBreakerTripped { .. } => report.breaker_trips += 1,
            _ => {}
        }
    }
    let replace: Vec<f64> = replacement_of
        .iter()
        .filter_map(|(new, old)| {
            Some((registered.get(new)? - first_fault.get(*old)?) as f64 / 1000.0)
        })
        .collect();
    report.detect_s = percentiles(detect);
    report.replace_s = percentiles(replace);
    report.serving_at_end = sim.serving();
    report.events = sim.trace.len();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_chaos_run_replaces_only_for_hardware_faults() {
        let r = run_chaos(ChaosSettings {
            nodes: 100,
            minutes: 10,
            failure_rate: 50.0,
            seed: 7,
        });
        assert_eq!(r.injected.values().sum::<u32>(), 50);
        assert_eq!(r.wrongly_replaced, 0, "{r:?}");
        assert!(r.replacements > 0);
        assert!(r.detect_s.1 <= 60.0, "{r:?}");
        assert_eq!(r.breaker_trips, 0);
    }
}
