//! Jobs placed on a pool's nodes and lost with their node, end to end over
//! a real nats-server, the scheduler and the provisioner in two `flotilla
//! up` processes: a queue with `pool: gpu` runs long local jobs on the
//! sim nodes of pool `gpu` (each attempt gets `FLOTILLA_NODE`), real
//! `flotilla agent --source sim` processes register the nodes, and an XID 79
//! injected through the agent of a node that runs a job gets the node
//! replaced; that job's attempt 1 ends lost naming the node, and attempt 2
//! runs on the other node and succeeds.
//!
//! Run: `NATS_SERVER_BIN=/path/to/nats-server cargo test --test e2e placement::`.

use crate::support::{http_client, node_status, publish_json, FlotillaUp, SimAgent};
use flotilla_bus::testing::NatsServer;
use flotilla_scheduler::ProcessIdentity;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Pool `gpu`: two sim nodes that wait for their agents, replaced after
/// two unhealthy reports, one extra node for the replacement.
fn pools_file(dir: &Path) -> String {
    let yaml = "providers:\n  cloud: {type: sim, auto_register: false}\npools:\n  gpu:\n    provider: cloud\n    min_nodes: 2\n    max_nodes: 2\n    cooldown: 0s\n    health: {unhealthy_threshold: 2, boot_grace: 0s, heartbeat_timeout: 30s}\n    replacement: {surge: 1, drain_mode: evict, circuit_breaker: {max_replaced_percent: 100}}\n";
    let path = dir.join("pools.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn wait_for(up: &FlotillaUp, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = up.get(path).1["result"].clone();
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {view:#}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn job<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == id))
        .unwrap_or(&Value::Null)
}

fn node_of(view: &Value, id: &str) -> String {
    job(view, id)["node"].as_str().unwrap_or("").to_string()
}

const JOBS: [&str; 3] = ["a", "b", "c"];
const POOL: &str = "/v1/query/provisioner/gpu";
const QUEUE: &str = "/v1/query/scheduler/train";

/// A NATS server, the provisioner and the scheduler in two `up`s, agents
/// for gpu-1..3, and queue `train` on pool `gpu` with both nodes active.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    fleet: FlotillaUp,
    scheduler: FlotillaUp,
    _agents: Vec<SimAgent>,
    _nats: NatsServer,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let fleet_dir = dir.path().join("provisioner");
        std::fs::create_dir_all(&fleet_dir).unwrap();
        std::fs::create_dir_all(dir.path().join("scheduler")).unwrap();
        let nats = NatsServer::start();
        let url = nats.url();
        let pools = pools_file(dir.path());
        let fleet = FlotillaUp::start(
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
            &fleet_dir,
        );
        let scheduler = FlotillaUp::start(
            &[
                "--nats",
                &url,
                "--only",
                "scheduler",
                "--allowed-commands",
                "sh",
            ],
            &dir.path().join("scheduler"),
        );
        let agents = ["gpu-1", "gpu-2", "gpu-3"]
            .iter()
            .map(|node| SimAgent::start(&url, node, dir.path()))
            .collect();
        wait_for(&fleet, POOL, "two active nodes", |v| {
            node_status(v, "gpu-1") == "active" && node_status(v, "gpu-2") == "active"
        });
        let configure = json!({"type": "configure_queue", "concurrency": 3, "pool": "gpu",
            "executor": "local"});
        assert_eq!(scheduler.send("scheduler", "train", &configure).0, 200);
        Cluster {
            dir,
            url,
            fleet,
            scheduler,
            _agents: agents,
            _nats: nats,
        }
    }

    fn release(&self) -> std::path::PathBuf {
        self.dir.path().join("release")
    }

    /// Submits a job that prints its node, then runs until the release
    /// file exists.
    fn submit(&self, id: &str) {
        let script = format!(
            "echo node=$FLOTILLA_NODE; while [ ! -e {} ]; do sleep 0.1; done; echo RESULT=1",
            self.release().display()
        );
        let submit = json!({"type": "submit", "job_id": id,
            "spec": {"command": ["sh", "-c", script], "kill_grace_seconds": 0.5}});
        let (status, reply) = self.scheduler.send("scheduler", "train", &submit);
        assert_eq!(status, 200, "{reply}");
    }

    /// An XID 79 on `node`, through its agent.
    fn xid_79(&self, node: &str) {
        let xid = json!({"kind": "event", "event": {"kind": "xid", "gpu": 0, "code": 79}});
        publish_json(&self.url, &format!("flotilla.faults.{node}"), xid);
    }

    /// The directory of attempt `attempt` of job `id`.
    fn attempt_dir(&self, id: &str, attempt: u32) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("scheduler/.flotilla/jobs/train/{id}/{attempt}"))
    }

    fn stdout(&self, id: &str, attempt: u32) -> String {
        std::fs::read_to_string(self.attempt_dir(id, attempt).join("stdout")).unwrap_or_default()
    }
}

/// The other node of the pool's two.
fn other(node: &str) -> &'static str {
    if node == "gpu-1" {
        "gpu-2"
    } else {
        "gpu-1"
    }
}

#[test]
fn a_job_lost_with_its_failed_node_runs_again_on_another_and_succeeds() {
    let c = Cluster::start();
    let scheduler = &c.scheduler;
    for id in JOBS {
        c.submit(id);
    }
    let view = wait_for(scheduler, QUEUE, "three jobs running", |v| {
        JOBS.iter().all(|id| job(v, id)["status"] == "running")
    });
    let mut nodes: Vec<String> = JOBS.iter().map(|id| node_of(&view, id)).collect();
    nodes.sort();
    // Two nodes, three jobs: balanced, two on one and one on the other.
    let ones = nodes.iter().filter(|n| *n == "gpu-1").count();
    assert!(
        nodes.iter().all(|n| n == "gpu-1" || n == "gpu-2"),
        "{nodes:?}"
    );
    assert!(ones == 1 || ones == 2, "{nodes:?}");

    // The node of job a takes an XID 79 through its agent.
    let bad = node_of(&view, "a");
    let good = other(&bad);
    c.xid_79(&bad);
    let view = wait_for(scheduler, QUEUE, "job a running again", |v| {
        job(v, "a")["attempt"] == 2 && job(v, "a")["status"] == "running"
    });
    let attempts = &job(&view, "a")["attempts"];
    assert_eq!(attempts[0]["status"], "lost", "{attempts:#}");
    assert_eq!(attempts[0]["node"], bad.as_str());
    let reason = attempts[0]["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("node {bad} failed")), "{reason}");
    assert!(reason.contains("xid_79"), "{reason}");
    // On another node: the other one, or the replacement if it is up by now.
    let again = attempts[1]["node"].as_str().unwrap_or("").to_string();
    assert!(again == good || again == "gpu-3", "{attempts:#}");
    for id in JOBS {
        assert_ne!(node_of(&view, id), bad, "{view:#}");
    }

    // The provisioner replaces the node (make before break).
    wait_for(&c.fleet, POOL, "the bad node replaced", |v| {
        node_status(v, &bad) == "terminated" && node_status(v, "gpu-3") == "active"
    });

    std::fs::write(c.release(), "").unwrap();
    let view = wait_for(scheduler, QUEUE, "every job done", |v| {
        JOBS.iter().all(|id| job(v, id)["status"] == "succeeded")
    });
    let a = job(&view, "a");
    assert_eq!(a["attempt"], 2);
    assert_eq!(a["attempts"][1]["status"], "succeeded");
    assert_eq!(a["node"], again.as_str());
    assert!(
        c.stdout("a", 1).starts_with(&format!("node={bad}\n")),
        "{}",
        c.stdout("a", 1)
    );
    assert!(
        c.stdout("a", 2).starts_with(&format!("node={again}\n")),
        "{}",
        c.stdout("a", 2)
    );

    // The log tells it: each start names its node, the loss names the node.
    let text = http_client()
        .get(format!(
            "{}/v1/events?stream=scheduler/train",
            scheduler.url
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_a = |kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["type"] == kind && e["payload"]["job_id"] == "a")
            .map(|e| &e["payload"])
            .collect()
    };
    let started = of_a("job_started");
    assert_eq!(started.len(), 2, "{text}");
    assert_eq!(started[0]["node"], bad.as_str());
    assert_eq!(started[1]["node"], again.as_str());
    let lost = of_a("job_lost");
    assert_eq!(lost.len(), 1, "{text}");
    assert_eq!(lost[0]["node"], bad.as_str());
    assert_eq!(of_a("job_placed").len(), 2);
}

/// The attempt's process, while it lives (by its `handle.json`; a zombie
/// is not alive).
fn process_of(dir: &Path) -> Option<ProcessIdentity> {
    let text = std::fs::read_to_string(dir.join("handle.json")).unwrap();
    let handle: Value = serde_json::from_str(&text).unwrap();
    let pid = handle["pid"].as_u64().unwrap() as u32;
    let start_ticks = handle["start_ticks"].as_u64().unwrap();
    ProcessIdentity::of(pid).filter(|p| p.start_ticks == start_ticks)
}

#[test]
fn a_node_lost_while_the_scheduler_is_down_loses_its_attempt_at_restart() {
    let mut c = Cluster::start();
    c.submit("a");
    let view = wait_for(&c.scheduler, QUEUE, "job a running", |v| {
        job(v, "a")["status"] == "running"
    });
    let bad = node_of(&view, "a");
    let first = c.attempt_dir("a", 1);
    // Killed, the scheduler leaves its attempt running; its node fails.
    c.scheduler.kill();
    assert!(process_of(&first).is_some());
    c.xid_79(&bad);
    wait_for(&c.fleet, POOL, "the bad node taken out", |v| {
        node_status(v, &bad) != "active"
    });
    c.scheduler.restart();
    let view = wait_for(&c.scheduler, QUEUE, "job a running again", |v| {
        job(v, "a")["attempt"] == 2 && job(v, "a")["status"] == "running"
    });
    let attempts = &job(&view, "a")["attempts"];
    assert_eq!(attempts[0]["status"], "lost", "{attempts:#}");
    let reason = attempts[0]["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("node {bad} failed")), "{reason}");
    assert_eq!(attempts[1]["node"], other(&bad), "{attempts:#}");
    // The orphaned attempt on the lost node was stopped, not adopted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_of(&first).is_some() {
        assert!(Instant::now() < deadline, "attempt 1 still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(c.release(), "").unwrap();
    let view = wait_for(&c.scheduler, QUEUE, "job a done", |v| {
        job(v, "a")["status"] == "succeeded"
    });
    assert_eq!(job(&view, "a")["attempt"], 2);
    assert!(c
        .stdout("a", 2)
        .starts_with(&format!("node={}\n", other(&bad))));
}
