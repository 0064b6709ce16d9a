//! Fleet end to end: `flotilla up --only provisioner` with an `exec`
//! provider whose "cloud" is a directory of files kept by shell scripts.
//!
//! The crash test SIGKILLs the provisioner in the middle of a replacement —
//! after the cloud created the new node but before the provisioner recorded
//! it — and restarts it: the re-driven effect adopts the node instead of
//! creating a second one, the old node is terminated once the new one is
//! up (make-before-break), and nothing is orphaned.

use crate::support::{flotilla, json_lines, FlotillaUp};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A pools file with one pool of `size` on an exec "cloud" under `cloud`.
fn pools_file(dir: &Path, cloud: &Path, size: u32) -> std::path::PathBuf {
    let c = cloud.display();
    std::fs::create_dir_all(cloud.join("nodes")).unwrap();
    let yaml = format!(
        r#"providers:
  files:
    type: exec
    provision: >-
      echo "$FLOTILLA_NODE_ID" >> {c}/created.log;
      touch {c}/nodes/"$FLOTILLA_NODE_ID";
      if [ -f {c}/slow ]; then sleep 4; fi;
      printf '{{"instance_id": "vm-%s", "registered": true}}' "$FLOTILLA_NODE_ID"
    list: >-
      cd {c}/nodes; printf '['; sep='';
      for f in *; do [ -e "$f" ] || continue;
      printf '%s{{"node_id":"%s","instance_id":"vm-%s","registered":true}}' "$sep" "$f" "$f"; sep=','; done;
      printf ']'
    terminate: >-
      rm -f {c}/nodes/"$FLOTILLA_NODE_ID"; echo "$FLOTILLA_NODE_ID" >> {c}/terminated.log
    timeout: 30s
pools:
  - name: gpu
    provider: files
    scaling: {{min_nodes: {size}, max_nodes: {size}}}
    health: {{unhealthy_threshold: 2, auto_replace: true, boot_grace: 0s}}
    replacement: {{surge: 1, drain_mode: evict}}
"#
    );
    let path = dir.join("pools.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn pool(up: &FlotillaUp) -> Value {
    up.get("/v1/query/provisioner/gpu").1["result"].clone()
}

fn status_of(view: &Value, node: &str) -> String {
    view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node_id"] == node))
        .map_or("absent".into(), |n| {
            n["status"].as_str().unwrap_or("?").to_string()
        })
}

fn wait_for(up: &FlotillaUp, what: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = pool(up);
        if done(&view) {
            return view;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; pool: {view:#}\nlog:\n{}",
                up.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn report_unhealthy(up: &FlotillaUp, node: &str) {
    let body = json!({"type": "report_health", "node_id": node, "now": now_ms(),
        "verdict": "unhealthy", "action": "replace", "reasons": ["xid_79"]});
    let (status, reply) = up.send("provisioner", "gpu", &body);
    assert_eq!(status, 200, "{reply}");
}

#[test]
fn killed_mid_replacement_the_provisioner_continues_without_a_second_node() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = dir.path().join("cloud");
    let pools = pools_file(dir.path(), &cloud, 2);
    let data = dir.path().join("data");
    let args = [
        "--only",
        "provisioner",
        "--data-dir",
        data.to_str().unwrap(),
        "--pools",
        pools.to_str().unwrap(),
        "--tick",
        "200ms",
    ];
    let mut up = FlotillaUp::start(&args, dir.path());
    let both_active =
        |v: &Value| status_of(v, "gpu-1") == "active" && status_of(v, "gpu-2") == "active";
    wait_for(
        &up,
        "two active nodes",
        Duration::from_secs(30),
        both_active,
    );

    // gpu-1 fails; its replacement gpu-3 is created by the cloud, and the
    // provision script is still running when the provisioner dies.
    std::fs::write(cloud.join("slow"), "").unwrap();
    report_unhealthy(&up, "gpu-1");
    report_unhealthy(&up, "gpu-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines(&cloud.join("created.log")).contains(&"gpu-3".to_string()) {
        assert!(
            Instant::now() < deadline,
            "replacement never started:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    up.kill();
    let view_dead = {
        // What the log holds at the kill: gpu-3 requested, not provisioned.
        std::fs::remove_file(cloud.join("slow")).unwrap();
        up.restart();
        pool(&up)
    };
    assert_ne!(status_of(&view_dead, "gpu-3"), "absent");

    let healed = wait_for(
        &up,
        "the replacement to finish",
        Duration::from_secs(30),
        |v| status_of(v, "gpu-1") == "terminated" && status_of(v, "gpu-3") == "active",
    );
    assert_eq!(status_of(&healed, "gpu-2"), "active");
    assert_eq!(
        status_of(&healed, "gpu-4"),
        "absent",
        "no second replacement"
    );
    let mut created = lines(&cloud.join("created.log"));
    created.sort();
    assert_eq!(created, ["gpu-1", "gpu-2", "gpu-3"], "gpu-3 created once");
    assert_eq!(
        lines(&cloud.join("terminated.log")),
        ["gpu-1"],
        "the old node is not orphaned"
    );
    let mut left: Vec<String> = std::fs::read_dir(cloud.join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["gpu-2", "gpu-3"]);
    assert!(
        up.log().contains("adopting an existing instance"),
        "{}",
        up.log()
    );

    // The log tells the story in order: requested before the old node went.
    up.terminate();
    let events = flotilla(&[
        "events",
        "--data-dir",
        data.to_str().unwrap(),
        "--stream",
        "provisioner/gpu",
    ]);
    let types: Vec<String> = json_lines(&events.stdout)
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["payload"]["node_id"].as_str().unwrap_or("")
            )
        })
        .collect();
    let at = |t: &str| {
        types
            .iter()
            .position(|x| x == t)
            .unwrap_or_else(|| panic!("{t} missing: {types:?}"))
    };
    assert!(at("node_requested gpu-3") < at("node_termination_requested gpu-1"));
    assert!(at("node_registered gpu-3") < at("node_termination_requested gpu-1"));
    let audit = flotilla(&["audit", "--data-dir", data.to_str().unwrap()]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}

#[test]
fn pools_validate_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = pools_file(dir.path(), &dir.path().join("cloud"), 2);
    let out = flotilla(&["pools", "validate", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("gpu: provider files, 2..=2 nodes"));
    let cases = [
        (
            "pools:\n  - {name: a, provider: sim, scaling: {min_nodes: 5, max_nodes: 3}}\n",
            "min_nodes (5) must not exceed max_nodes (3)",
        ),
        (
            "pools:\n  a: {provider: sim, max_nodes: 3, cooldown: -5m}\n",
            "pools.a.cooldown: must not be negative",
        ),
        (
            "pools:\n  a: {provider: sim, max_nodes: 3, autoscaling: {type: hunch}}\n",
            "unknown variant `hunch`",
        ),
        (
            "pools:\n  a: {provider: sim, max_nodes: 3, nodes: 3}\n",
            "unknown field `nodes`",
        ),
    ];
    for (yaml, expected) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = flotilla(&["pools", "validate", path.to_str().unwrap()]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
}
