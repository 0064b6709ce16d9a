//! The whole loop, the product's headline scenario: a study that runs
//! itself on a GPU pool that heals itself.
//!
//! One `flotilla up --nats` hosts the solver, the scheduler, the
//! provisioner and the study runs; a real `flotilla agent --source sim`
//! runs for every node the sim provider creates. A study with `parallel:
//! 16` runs its trials as jobs on the nodes of pool `gpu` (min 2, max 6,
//! the queue autoscaler at 4 jobs per node, so 16 jobs in flight ask for
//! 4 nodes). While trials run, an XID 79 is injected on a node that runs
//! one: the node is replaced (its replacement comes up before it goes),
//! the trial whose job was lost with it runs again on another node, and
//! the study ends with exactly `budget` results. After the run the pool
//! shrinks back to its minimum.

use crate::support::{
    flotilla, json_lines, node_statuses, publish_json, wait_until, Agents, FlotillaUp,
};
use flotilla_bus::testing::NatsServer;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const BUDGET: u64 = 48;

/// Records where each attempt ran (node, trial, attempt), then scores the
/// trial after a while.
const SCRIPT: &str = r#"#!/bin/sh
echo "$FLOTILLA_NODE $FLOTILLA_TRIAL_ID $FLOTILLA_ATTEMPT_NUMBER" >> "$RECORDS"
sleep 2
awk -v x="$ARQON_x" 'BEGIN { printf "RESULT=%f\n", (x - 1) * (x - 1) }'
"#;

fn pools(dir: &Path) -> String {
    let yaml = "providers:\n  cloud: {type: sim, auto_register: false}\npools:\n  gpu:\n    provider: cloud\n    min_nodes: 2\n    max_nodes: 6\n    cooldown: 0s\n    autoscaling: {type: queue, jobs_per_node: 4}\n    health: {unhealthy_threshold: 1, boot_grace: 0s, heartbeat_timeout: 5s}\n    replacement: {drain_mode: evict, circuit_breaker: {max_replaced_percent: 100}}\n";
    crate::support::pools_file(dir, yaml)
}

fn inject_xid_79(nats: &str, node: &str) {
    let body = json!({"kind": "event", "event": {"kind": "xid", "gpu": 0, "code": 79}});
    publish_json(nats, &format!("flotilla.faults.{node}"), body);
}

fn result(up: &FlotillaUp, path: &str) -> Value {
    up.get(path).1["result"].clone()
}

/// (node, trial, attempt) of every evaluation the script recorded.
fn records(path: &Path) -> Vec<(String, String, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn a_study_runs_itself_on_a_pool_that_scales_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let script = dir.path().join("eval.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let records_path = dir.path().join("records.txt");
    let pools = pools(dir.path());
    let jobs_dir = dir.path().join("jobs");
    let up = FlotillaUp::start_with_env(
        &["--nats", &url, "--pools", &pools, "--tick", "200ms"],
        &[
            ("FLOTILLA_ALLOWED_COMMANDS", script.as_os_str()),
            ("FLOTILLA_RECONCILE_SECONDS", "1".as_ref()),
            ("FLOTILLA_JOBS_DIR", jobs_dir.as_os_str()),
            ("RECORDS", records_path.as_os_str()),
        ],
        dir.path(),
    );
    let _agents = Agents::follow(up.url.clone(), url.clone(), dir.path().to_path_buf());
    wait_until(Duration::from_secs(60), || {
        let pool = result(&up, "/v1/query/provisioner/gpu");
        let active = node_statuses(&pool)
            .values()
            .filter(|s| *s == "active")
            .count();
        (active == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the pool's first two nodes never came up:\n{}", up.log()));

    let create = json!({"type": "create_study", "seed": 11, "budget": BUDGET,
        "bounds": {"x": {"min": -4.0, "max": 4.0}},
        "runner": {"command": [script.to_str().unwrap()], "parallel": 16, "pool": "gpu",
                   "backoff_limit": 1, "timeout_seconds": 60}});
    let (status, reply) = up.send("solver", "loop", &create);
    assert_eq!(status, 200, "{reply}");

    // The queue is deep: the pool grows from 2 to the 4 nodes that 16
    // jobs at 4 per node ask for (within its max of 6).
    wait_until(Duration::from_secs(60), || {
        let pool = result(&up, "/v1/query/provisioner/gpu");
        (pool["desired"] == 4).then_some(())
    })
    .unwrap_or_else(|| panic!("the pool never scaled up:\n{}", up.log()));

    // A node that runs a trial gets an XID 79.
    let (victim, trial) = wait_until(Duration::from_secs(60), || {
        let run = result(&up, "/v1/query/study_run/loop");
        run["running"].as_array()?.iter().find_map(|t| {
            let node = t["node"].as_str()?;
            (t["phase"] == "running").then(|| {
                (
                    node.to_string(),
                    t["trial_id"].as_str().unwrap().to_string(),
                )
            })
        })
    })
    .unwrap_or_else(|| panic!("no trial ran on a node:\n{}", up.log()));
    inject_xid_79(&url, &victim);

    let run = wait_until(Duration::from_secs(180), || {
        let run = result(&up, "/v1/query/study_run/loop");
        (run["status"] == "finished").then_some(run)
    })
    .unwrap_or_else(|| {
        panic!(
            "the run did not finish: {}\n{}",
            result(&up, "/v1/query/study_run/loop"),
            up.log()
        )
    });

    // Exactly the budget's results, all of them values.
    let study = result(&up, "/v1/query/solver/loop");
    assert_eq!(study["status"], "completed", "{study}");
    assert_eq!(study["counts"]["told"], BUDGET, "{study}");
    assert_eq!(run["counts"]["completed"], BUDGET, "{run}");

    // The victim was replaced, make before break: the pool's log has a
    // replacement that registered before the victim's termination.
    let events =
        json_lines(&flotilla(&["events", "--nats", &url, "--stream", "provisioner/gpu"]).stdout);
    let position = |kind: &str, node: &str| {
        events
            .iter()
            .position(|e| e["type"] == kind && e["payload"]["node_id"] == node)
    };
    let replacement = events
        .iter()
        .find(|e| e["type"] == "node_requested" && e["payload"]["reason"] == "replacement")
        .and_then(|e| e["payload"]["node_id"].as_str())
        .unwrap_or_else(|| panic!("no replacement was requested: {events:#?}"));
    let registered = position("node_registered", replacement).expect("the replacement registered");
    let terminated =
        position("node_termination_requested", &victim).expect("the victim terminated");
    assert!(
        registered < terminated,
        "{victim} went before {replacement} came: {events:#?}"
    );
    // The trial lost with the node ran again, on another node.
    let evaluations = records(&records_path);
    let of_trial: Vec<&(String, String, u32)> =
        evaluations.iter().filter(|(_, t, _)| *t == trial).collect();
    assert!(
        of_trial.iter().any(|(node, _, _)| *node == victim),
        "{trial} never ran on {victim}: {of_trial:?}"
    );
    assert!(
        of_trial.iter().any(|(node, _, _)| *node != victim),
        "{trial} did not run again elsewhere: {of_trial:?}"
    );
    // At most once per attempt, and every evaluation on a node of the pool.
    let mut seen = BTreeSet::new();
    for (node, t, attempt) in &evaluations {
        assert!(node.starts_with("gpu-"), "ran off the pool: {node}");
        assert!(
            seen.insert((t.clone(), *attempt)),
            "{t} attempt {attempt} ran twice"
        );
    }

    // With the queue empty the pool shrinks back to its minimum.
    wait_until(Duration::from_secs(60), || {
        let pool = result(&up, "/v1/query/provisioner/gpu");
        (pool["desired"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the pool never scaled down:\n{}", up.log()));

    let audit = flotilla(&["audit", "--nats", &url]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}
