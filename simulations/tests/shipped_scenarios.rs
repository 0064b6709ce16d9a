//! Every scenario shipped under `simulations/scenarios/` parses, runs and
//! passes its own checks; and a run is a function of its scenario and seed
//! (the event log's hash is the same for the same seed, and differs for
//! another).

use flotilla_messages::provisioner::ProvisionerEvent as E;
use flotilla_simulations::scenario::file::Scenario;
use flotilla_simulations::scenario::report::SimReport;
use flotilla_simulations::scenario::world::Recorded;
use flotilla_simulations::scenario::{run, Quiet, RunObserver};
use std::path::PathBuf;

/// Keeps every event, to check the order of things.
#[derive(Default)]
struct Trace(Vec<Recorded>);

impl RunObserver for Trace {
    fn events(&mut self, recorded: &[Recorded]) {
        self.0.extend_from_slice(recorded);
    }
}

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Scenario::from_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn passes(name: &str) -> SimReport {
    let s = scenario(name);
    let report = run(&s, s.seed(), &mut Quiet).unwrap_or_else(|e| panic!("{name}: {e}"));
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: expected {}, saw {}", c.what, c.expected, c.seen))
        .collect();
    assert!(failed.is_empty(), "{name}: {failed:#?}");
    assert!(!report.checks.is_empty(), "{name} checks something");
    report
}

#[test]
fn every_shipped_scenario_is_tested_here() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut shipped: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    assert_eq!(
        shipped,
        [
            "application-xids-ignored.yaml",
            "navarch-stress-1000.yaml",
            "navarch-stress-5000.yaml",
            "queue-scale-up-down.yaml",
            "rack-cascade-circuit-breaker.yaml",
            "silent-agent.yaml",
            "thermal-blip.yaml",
            "xid-79-replacement.yaml",
        ]
    );
}

#[test]
fn xid_79_replaces_the_node_make_before_break() {
    let r = passes("xid-79-replacement.yaml");
    assert_eq!(r.replace_s.len(), 1, "{r:?}");
    assert_eq!(r.detect_s.len(), 1);
    let s = scenario("xid-79-replacement.yaml");
    let mut trace = Trace::default();
    run(&s, 0, &mut trace).unwrap();
    let at = |pred: &dyn Fn(&E) -> bool| {
        trace
            .0
            .iter()
            .position(|r| pred(&r.event))
            .expect("happened")
    };
    let old = "fleet-2";
    let cordoned = at(&|e| matches!(e, E::NodeCordoned { node_id, .. } if node_id == old));
    let drained = at(&|e| matches!(e, E::NodeDrainStarted { node_id, .. } if node_id == old));
    let requested = at(&|e| matches!(e, E::NodeRequested { replaces: Some(o), .. } if o == old));
    let E::NodeRequested { node_id: new, .. } = &trace.0[requested].event else {
        unreachable!()
    };
    let up = at(&|e| matches!(e, E::NodeRegistered { node_id, .. } if node_id == new));
    let ended = at(&|e| matches!(e, E::NodeTerminationRequested { node_id, .. } if node_id == old));
    assert!(
        cordoned < drained && drained < requested,
        "cordon, drain, replace"
    );
    assert!(
        up < ended,
        "make before break: the new node is up before the old one goes"
    );
}

#[test]
fn a_flaky_cloud_still_fills_the_pool() {
    let s = Scenario::from_yaml(
        "name: flaky\nworld: {provision_failure_rate: 0.3}\nstress:\n  duration: 30m\n  seed: 42\n  fleet_gen: {total_nodes: 6, templates: [{name: t, weight: 1, gpu_count: 8}]}\n",
    )
    .unwrap();
    let mut trace = Trace::default();
    let r = run(&s, 42, &mut trace).unwrap();
    assert!(
        trace
            .0
            .iter()
            .any(|r| matches!(r.event, E::NodeFailed { .. })),
        "some provisionings failed"
    );
    assert_eq!(
        r.pools[0].samples.last().unwrap().serving,
        6,
        "the pool is full anyway"
    );
}

#[test]
fn application_xids_never_take_a_node_out() {
    let r = passes("application-xids-ignored.yaml");
    assert_eq!(r.faults.iter().map(|f| f.injected).sum::<u32>(), 9);
    assert!(r.faults.iter().all(|f| f.detected == 0 && f.replaced == 0));
}

#[test]
fn a_thermal_blip_changes_nothing() {
    passes("thermal-blip.yaml");
}

#[test]
fn a_silent_agent_is_replaced() {
    let r = passes("silent-agent.yaml");
    assert_eq!(r.replace_s.len(), 1);
}

#[test]
fn a_rack_cascade_trips_the_circuit_breaker() {
    let r = passes("rack-cascade-circuit-breaker.yaml");
    assert!(
        r.pools[0].breaker_periods.len() == 1,
        "{:?}",
        r.pools[0].breaker_periods
    );
}

#[test]
fn the_queue_scales_the_pool_up_and_down() {
    let r = passes("queue-scale-up-down.yaml");
    let targets: Vec<u32> = r.pools[0].samples.iter().map(|s| s.target).collect();
    assert_eq!(targets.iter().max(), Some(&8));
    assert_eq!(targets.last(), Some(&2));
}

#[test]
fn navarchs_1000_node_chaos_passes() {
    let r = passes("navarch-stress-1000.yaml");
    assert!(
        r.faults.iter().all(|f| f.wrongly_replaced == 0),
        "{:?}",
        r.faults
    );
}

#[test]
fn navarchs_5000_node_extreme_passes_and_is_deterministic() {
    let s = scenario("navarch-stress-5000.yaml");
    let first = passes("navarch-stress-5000.yaml");
    assert!(
        first.faults.iter().all(|f| f.wrongly_replaced == 0),
        "{:?}",
        first.faults
    );
    let again = run(&s, s.seed(), &mut Quiet).unwrap();
    assert_eq!(again.log_hash, first.log_hash, "same seed, same log");
    assert_eq!(again.events, first.events);
    let other = run(&s, s.seed() + 1, &mut Quiet).unwrap();
    assert_ne!(other.log_hash, first.log_hash, "another seed, another log");
}
