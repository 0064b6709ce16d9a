//! Fleet end to end over a real nats-server: `flotilla up --only
//! provisioner` with the sim provider (nodes wait for their agents), and
//! real `flotilla agent --source sim` processes publishing on
//! `flotilla.health.<node>`. Faults are injected over NATS.
//!
//! Run: `NATS_SERVER_BIN=/path/to/nats-server cargo test --test e2e fleet_nats::`.

use crate::support::{http_client, node_status, publish_json, FlotillaUp, SimAgent};
use flotilla_bus::testing::NatsServer;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn wait_for(up: &FlotillaUp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = up.get("/v1/query/provisioner/gpu").1["result"].clone();
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; pool: {view:#}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pools(dir: &Path, autoscaling: &str) -> String {
    let yaml = format!(
        "providers:\n  cloud: {{type: sim, auto_register: false}}\npools:\n  gpu:\n    provider: cloud\n    min_nodes: 2\n    max_nodes: 4\n    cooldown: 0s\n{autoscaling}    health: {{unhealthy_threshold: 2, boot_grace: 0s, heartbeat_timeout: 3s}}\n    replacement: {{drain_mode: evict, circuit_breaker: {{max_replaced_percent: 100}}}}\n"
    );
    let path = dir.join("pools.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn agents_register_nodes_an_xid_79_replaces_and_a_dead_agent_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let pools = pools(dir.path(), "");
    let up = FlotillaUp::start(
        &[
            "--nats",
            &url,
            "--only",
            "provisioner",
            "--pools",
            &pools,
            "--tick",
            "200ms",
        ],
        dir.path(),
    );
    wait_for(&up, "two registering nodes", |v| {
        node_status(v, "gpu-2") == "registering"
    });

    let a1 = SimAgent::start(&url, "gpu-1", dir.path());
    let mut a2 = Some(SimAgent::start(&url, "gpu-2", dir.path()));
    wait_for(&up, "agents to register their nodes", |v| {
        node_status(v, "gpu-1") == "active" && node_status(v, "gpu-2") == "active"
    });

    // An application XID changes nothing; XID 79 takes gpu-1 out.
    let xid =
        |code: u32| json!({"kind": "event", "event": {"kind": "xid", "gpu": 0, "code": code}});
    publish_json(&url, "flotilla.faults.gpu-1", xid(13));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        node_status(&up.get("/v1/query/provisioner/gpu").1["result"], "gpu-1"),
        "active"
    );
    publish_json(&url, "flotilla.faults.gpu-1", xid(79));
    // The replacement is provisioned asynchronously (the sim provider's
    // delay): wait for it to be registering, not only requested.
    wait_for(&up, "gpu-1 drained and gpu-3 registering", |v| {
        node_status(v, "gpu-1") == "draining" && node_status(v, "gpu-3") == "registering"
    });
    // Make before break: gpu-1 stays until its replacement's agent is up.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        node_status(&up.get("/v1/query/provisioner/gpu").1["result"], "gpu-1"),
        "draining"
    );
    let _a3 = SimAgent::start(&url, "gpu-3", dir.path());
    wait_for(&up, "gpu-1 terminated and gpu-3 active", |v| {
        node_status(v, "gpu-1") == "terminated" && node_status(v, "gpu-3") == "active"
    });
    drop(a1);

    // gpu-2's agent dies: unhealthy after the 3 s heartbeat timeout, replaced.
    let killed = Instant::now();
    a2.take();
    let view = wait_for(&up, "gpu-2 taken out and gpu-4 registering", |v| {
        node_status(v, "gpu-2") == "draining" && node_status(v, "gpu-4") == "registering"
    });
    // Not before the timeout: the agent's last heartbeat may precede the
    // kill by up to one 200 ms interval, so the timeout runs from there.
    assert!(killed.elapsed() >= Duration::from_secs(3) - Duration::from_millis(200));
    let gpu2 = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "gpu-2")
        .unwrap();
    assert_eq!(gpu2["reasons"], json!(["heartbeat_timeout"]));
    assert_eq!(node_status(&view, "gpu-4"), "registering");

    let (_, metrics) = (
        0,
        http_client()
            .get(format!("{}/metrics", up.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    );
    for line in [
        "navarch_xid_errors_total{node=\"gpu-1\",xid=\"79\"} 1",
        "flotilla_xid_errors_total{node=\"gpu-1\",xid=\"13\"} 1",
        "navarch_node_replacements_total{pool=\"gpu\"} 2",
        "flotilla_circuit_breaker_open{pool=\"gpu\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("navarch_node_gpu_temperature_celsius{gpu=\"0\",node=\"gpu-3\"} 55"));
}

#[test]
fn the_schedulers_queue_signals_scale_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let pools = pools(
        dir.path(),
        "    autoscaling: {type: queue, jobs_per_node: 4}\n",
    );
    let up = FlotillaUp::start(
        &[
            "--nats",
            &url,
            "--only",
            "scheduler,provisioner",
            // NATS allows no local program until told: these jobs `sleep`.
            "--allowed-commands",
            "sleep",
            "--pools",
            &pools,
            "--tick",
            "200ms",
        ],
        dir.path(),
    );
    wait_for(&up, "the pool", |v| v["desired"] == 2);
    // A real queue on the pool: 4 jobs run, 9 wait, so demand is 13 jobs
    // at 4 per node and the pool grows to its max of 4.
    let configure =
        json!({"type": "configure_queue", "concurrency": 4, "pool": "gpu", "executor": "local"});
    assert_eq!(up.send("scheduler", "train", &configure).0, 200);
    for i in 0..13 {
        let submit = json!({"type": "submit", "job_id": format!("j{i}"),
            "spec": {"command": ["sleep", "15"], "expects_value": false}});
        let (status, reply) = up.send("scheduler", "train", &submit);
        assert_eq!(status, 200, "{reply}");
    }
    // The new node is provisioned by an effect after the scale-up is
    // recorded: wait for both.
    let view = wait_for(&up, "a scale-up to the max", |v| {
        v["desired"] == 4 && node_status(v, "gpu-4") != "provisioning"
    });
    assert_eq!(node_status(&view, "gpu-4"), "registering");
    for i in 0..13 {
        let cancel = json!({"type": "cancel", "job_id": format!("j{i}")});
        up.send("scheduler", "train", &cancel);
    }
}
