//! What the fleet must show, on virtual time with the sim cloud and sim
//! GPUs: replacement for XID 79, nothing for application XIDs or a thermal
//! blip, a silent agent detected, the circuit breaker tripping.

use crate::fleet::{FleetSim, WorldSettings};
use flotilla_health::HealthPolicy;
use flotilla_health::{FaultKind, GpuEvent};
use flotilla_messages::fleet::PoolsFile;
use flotilla_messages::provisioner::ProvisionerEvent as E;
use flotilla_provisioner::NodeStatus;

const MIN: u64 = 60_000;

fn pool(size: u32) -> FleetSim {
    let yaml = format!(
        "pools:\n  gpu:\n    provider: sim\n    min_nodes: {size}\n    max_nodes: {}\n    health: {{unhealthy_threshold: 2, boot_grace: 60s, heartbeat_timeout: 2m}}\n    replacement: {{surge: {size}, circuit_breaker: {{max_replaced_percent: 50, window: 10m}}}}\n",
        size + 2
    );
    let config = PoolsFile::from_yaml(&yaml).unwrap().pools.remove(0);
    let mut sim = FleetSim::new(config, WorldSettings::default(), HealthPolicy::default()).unwrap();
    sim.run_for(5 * MIN).unwrap();
    assert_eq!(sim.serving(), size as usize, "the pool came up");
    sim
}

fn xid(code: u32) -> FaultKind {
    FaultKind::Event {
        event: GpuEvent::Xid { gpu: 3, code },
    }
}

fn about(node: &str) -> impl Fn(&E) -> bool + '_ {
    move |e| e.node_id() == Some(node)
}

#[test]
fn xid_79_cordons_drains_replaces_before_terminating_and_restores_the_pool() {
    let mut sim = pool(4);
    let t0 = sim.now();
    sim.inject("gpu-2", xid(79));
    sim.run_for(10 * MIN).unwrap();
    let at = |kind: &str| {
        sim.first(t0, |e| e.event_type() == kind && about("gpu-2")(e))
            .unwrap_or_else(|| panic!("no {kind} for gpu-2"))
            .at
    };
    let cordoned = at("node_cordoned");
    let drain = at("node_drain_started");
    let terminated = at("node_termination_requested");
    let replacement = sim
        .first(
            t0,
            |e| matches!(e, E::NodeRequested { replaces: Some(old), .. } if old == "gpu-2"),
        )
        .expect("a replacement");
    let index = |pred: &dyn Fn(&E) -> bool| sim.trace.iter().position(|r| pred(&r.event)).unwrap();
    assert!(cordoned <= drain && drain <= replacement.at);
    assert!(
        index(&|e| matches!(
            e,
            E::NodeRequested {
                replaces: Some(_),
                ..
            }
        )) < index(
            &|e| matches!(e, E::NodeTerminationRequested { node_id, .. } if node_id == "gpu-2")
        ),
        "make before break"
    );
    assert!(replacement.at < terminated);
    assert_eq!(sim.nodes_in(NodeStatus::Terminated), vec!["gpu-2"]);
    assert_eq!(sim.serving(), 4, "back at size");
    // Detected within two report intervals (threshold 2).
    assert!(
        cordoned - t0 <= 20_000,
        "time to detect {} ms",
        cordoned - t0
    );
}

#[test]
fn application_xids_never_replace() {
    let mut sim = pool(4);
    for (node, code) in [("gpu-1", 13), ("gpu-2", 94), ("gpu-3", 31), ("gpu-4", 43)] {
        sim.inject(node, xid(code));
    }
    sim.run_for(10 * MIN).unwrap();
    assert_eq!(sim.count("node_cordoned"), 0);
    assert_eq!(sim.count("node_requested"), 4, "only the initial nodes");
    assert_eq!(
        sim.count("node_health_evaluated"),
        0,
        "they stayed healthy throughout"
    );
}

#[test]
fn a_thermal_blip_shorter_than_the_window_does_nothing() {
    let mut sim = pool(4);
    let blip = FaultKind::Temperature {
        gpu: 0,
        celsius: 87.0,
        duration: Some(20_000),
    };
    sim.inject("gpu-1", blip);
    sim.run_for(10 * MIN).unwrap();
    assert_eq!(sim.count("node_cordoned"), 0);
    assert_eq!(sim.count("node_health_evaluated"), 0);
    // The same heat, sustained, cordons the node for a reset (no replacement).
    sim.inject(
        "gpu-1",
        FaultKind::Temperature {
            gpu: 0,
            celsius: 87.0,
            duration: None,
        },
    );
    sim.run_for(5 * MIN).unwrap();
    assert!(matches!(
        sim.first(0, |e| matches!(e, E::NodeCordoned { .. }))
            .map(|r| &r.event),
        Some(E::NodeCordoned {
            reason: flotilla_messages::provisioner::RemovalReason::GpuReset,
            ..
        })
    ));
    assert_eq!(sim.count("node_drain_started"), 0);
}

#[test]
fn a_dead_agent_makes_its_node_unhealthy_after_the_heartbeat_timeout() {
    let mut sim = pool(4);
    let t0 = sim.now();
    sim.kill_agent("gpu-3");
    sim.run_for(5 * MIN).unwrap();
    let flagged = sim
        .first(t0, |e| {
            matches!(e, E::NodeHealthEvaluated { node_id, reasons, .. }
            if node_id == "gpu-3" && reasons.iter().any(|r| r == "heartbeat_timeout"))
        })
        .expect("flagged");
    let silent_for = flagged.at - t0;
    assert!(
        (2 * MIN..=2 * MIN + 20_000).contains(&silent_for),
        "flagged after {silent_for} ms"
    );
    assert!(sim
        .first(
            t0,
            |e| matches!(e, E::NodeRequested { replaces: Some(old), .. } if old == "gpu-3")
        )
        .is_some());
}

#[test]
fn sixty_percent_failing_at_once_trips_the_circuit_breaker() {
    let mut sim = pool(10);
    for i in 1..=6 {
        sim.inject(&format!("gpu-{i}"), xid(79));
    }
    sim.run_for(5 * MIN).unwrap();
    let trips: Vec<&E> = sim
        .trace
        .iter()
        .map(|r| &r.event)
        .filter(|e| matches!(e, E::CircuitBreakerTripped { .. }))
        .collect();
    assert_eq!(trips.len(), 1, "says so once");
    let E::CircuitBreakerTripped {
        replacements,
        pool_size,
        percent,
        ..
    } = trips[0]
    else {
        unreachable!()
    };
    assert_eq!((*replacements, *pool_size), (6, 10));
    assert!(*percent > 50.0);
    assert_eq!(
        sim.count("node_drain_started"),
        5,
        "five replaced, then it stopped"
    );
}

#[test]
fn a_flaky_cloud_still_fills_the_pool_and_runs_are_deterministic() {
    let run = || {
        let yaml = "pools:\n  gpu:\n    provider: sim\n    min_nodes: 6\n    max_nodes: 6\n";
        let config = PoolsFile::from_yaml(yaml).unwrap().pools.remove(0);
        let settings = WorldSettings {
            failure_rate: 0.3,
            seed: 42,
            ..WorldSettings::default()
        };
        let mut sim = FleetSim::new(config, settings, HealthPolicy::default()).unwrap();
        sim.run_for(30 * MIN).unwrap();
        sim
    };
    let (a, b) = (run(), run());
    assert_eq!(a.serving(), 6);
    assert!(a.count("node_failed") > 0, "some provisionings failed");
    assert_eq!(a.trace, b.trace);
}
