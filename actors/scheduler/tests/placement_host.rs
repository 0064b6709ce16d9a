//! Placement hosted for real: the provisioner's pool aggregate and the
//! scheduler's queues on one embedded backend (sled in a temp dir,
//! in-process subjects), real subprocesses. A queue whose pool the
//! provisioner has waits for a ready node, spreads its attempts over the
//! ready nodes (`FLOTILLA_NODE`), and an attempt whose node takes an XID 79
//! is stopped, recorded lost naming the node, and runs again on another
//! node. A queue whose pool the provisioner does not have runs unplaced.

use flotilla_bus::embedded::{EmbeddedBus, SledLog};
use flotilla_host::{AggregateRegistry, EffectHandler, HostConfig, HostDeps, HostMetrics};
use flotilla_messages::fleet::PoolConfig;
use flotilla_messages::health::{HealthAction, Verdict};
use flotilla_messages::provisioner::ProvisionerCommand;
use flotilla_messages::{CommandRequest, Reply, Subjects};
use flotilla_provisioner::Pool;
use flotilla_scheduler::{
    AllowedCommands, Executor, LocalExecutor, NodeDirectory, NodeWatch, Queue, SchedulerEffects,
    SchedulerMetrics,
};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Fleet {
    pools: Arc<AggregateRegistry<Pool>>,
    queues: Arc<AggregateRegistry<Queue>>,
    watch: tokio::task::JoinHandle<()>,
}

async fn fleet(dir: &Path) -> Fleet {
    let deps = HostDeps {
        log: Arc::new(SledLog::open(&dir.join("log")).expect("open log")),
        bus: Arc::new(EmbeddedBus::new()),
        config: Arc::new(HostConfig::default()),
        metrics: HostMetrics::unregistered(),
    };
    // The provisioner's pools without provider effects: the test plays the cloud.
    let pools = AggregateRegistry::<Pool>::new(deps.clone(), None);
    let executors: Vec<Arc<dyn Executor>> = vec![Arc::new(LocalExecutor::new(
        dir.join("jobs"),
        AllowedCommands::any(),
    ))];
    let nodes = NodeDirectory::new(deps.log.clone());
    let effects =
        SchedulerEffects::placing(executors, SchedulerMetrics::unregistered(), nodes.clone());
    let handler: Arc<dyn EffectHandler<Queue>> = effects.clone();
    let queues = AggregateRegistry::<Queue>::with_settings(
        deps.clone(),
        Some(handler),
        AllowedCommands::any(),
    );
    effects.attach(queues.clone());
    let watch = NodeWatch::start(nodes, effects, deps.bus.clone(), &Subjects::default())
        .await
        .expect("watch");
    Fleet {
        pools,
        queues,
        watch,
    }
}

fn now() -> u64 {
    flotilla_host::unix_millis()
}

impl Fleet {
    async fn pool(&self, command: ProvisionerCommand) -> Reply {
        let reply = self.pools.execute_typed("gpu", command, None).await;
        assert!(reply.ok, "{:?}", reply.error);
        reply
    }

    async fn bring_up(&self, node: &str) {
        self.pool(ProvisionerCommand::NodeProvisioned {
            node_id: node.into(),
            instance_id: format!("i-{node}"),
            registered: false,
            now: now(),
        })
        .await;
        self.pool(ProvisionerCommand::RegisterNode {
            node_id: node.into(),
            now: now(),
        })
        .await;
    }

    async fn send(&self, queue: &str, command: Value) -> Reply {
        let request = CommandRequest::from_value(command, None).unwrap();
        let reply = self.queues.execute(queue, request, None).await;
        assert!(reply.ok, "{:?}", reply.error);
        reply
    }

    async fn wait_for(&self, queue: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let view = self.queues.query(queue).await.result.unwrap_or_default();
            if cond(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{what} not reached: {view:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn job<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == id))
        .unwrap_or(&Value::Null)
}

fn pool_config() -> PoolConfig {
    serde_json::from_value(json!({
        "name": "gpu", "provider": "sim",
        "scaling": {"min_nodes": 2, "max_nodes": 4, "cooldown_period": "0s"},
        "health": {"unhealthy_threshold": 1, "boot_grace": "0s", "auto_replace": true},
        "replacement": {"circuit_breaker": {"max_replaced_percent": 100}},
    }))
    .expect("a pool")
}

/// A job that prints its node, then runs until `release` exists.
fn held_job(id: &str, release: &Path) -> Value {
    let script = format!(
        "echo node=$FLOTILLA_NODE; while [ ! -e {} ]; do sleep 0.05; done; echo RESULT=1",
        release.display()
    );
    json!({"type": "submit", "job_id": id,
        "spec": {"command": ["sh", "-c", script], "kill_grace_seconds": 0.2}})
}

#[actix_rt::test]
async fn attempts_go_to_ready_nodes_and_one_lost_with_its_node_runs_again_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let f = fleet(dir.path()).await;
    f.pool(ProvisionerCommand::ApplyPool {
        config: Box::new(pool_config()),
        now: now(),
    })
    .await;
    let configure = json!({"type": "configure_queue", "concurrency": 3, "pool": "gpu"});
    f.send("train", configure).await;
    f.send("train", held_job("a", &release)).await;
    // gpu-1 and gpu-2 are requested, neither is up: the attempt waits.
    let view = f.queues.query("train").await.result.unwrap();
    assert_eq!(job(&view, "a")["status"], "dispatched", "{view:#}");
    assert_eq!(job(&view, "a")["node"], Value::Null);
    f.bring_up("gpu-1").await;
    f.bring_up("gpu-2").await;
    f.wait_for("train", "a running", |v| job(v, "a")["status"] == "running")
        .await;
    // The next go to the node with the fewest of the queue's attempts, then
    // the smallest id: gpu-2, then gpu-1 again.
    f.send("train", held_job("b", &release)).await;
    f.send("train", held_job("c", &release)).await;
    let view = f
        .wait_for("train", "three attempts running on the pool", |v| {
            ["a", "b", "c"]
                .iter()
                .all(|id| job(v, id)["status"] == "running")
        })
        .await;
    let node_of = |v: &Value, id: &str| job(v, id)["node"].as_str().unwrap_or("").to_string();
    let on: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|id| node_of(&view, id))
        .collect();
    assert_eq!(on, ["gpu-1", "gpu-2", "gpu-1"]);

    // gpu-1 takes an XID 79: what runs there is lost and runs again on gpu-2.
    f.pool(ProvisionerCommand::ReportHealth {
        node_id: "gpu-1".into(),
        now: now(),
        verdict: Verdict::Unhealthy,
        action: HealthAction::Replace,
        reasons: vec!["xid_replace:xid_79".into()],
    })
    .await;
    let view = f
        .wait_for("train", "the lost attempts running again", |v| {
            ["a", "c"]
                .iter()
                .all(|id| job(v, id)["attempt"] == 2 && job(v, id)["status"] == "running")
        })
        .await;
    for id in ["a", "c"] {
        let attempts = &job(&view, id)["attempts"];
        assert_eq!(attempts[0]["status"], "lost", "{attempts:#}");
        assert_eq!(attempts[0]["node"], "gpu-1");
        let reason = attempts[0]["reason"].as_str().unwrap();
        assert_eq!(reason, "node gpu-1 failed (xid_replace:xid_79)");
        assert_eq!(attempts[1]["node"], "gpu-2", "the failed node is not ready");
    }
    assert_eq!(job(&view, "b")["attempt"], 1, "gpu-2's attempt runs on");
    // The first attempt's process is gone: it was stopped, not left running.
    let pid = |attempt: u32| -> u32 {
        let dir = dir.path().join("jobs/train/a").join(attempt.to_string());
        let handle: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("handle.json")).unwrap())
                .unwrap();
        handle["pid"].as_u64().unwrap() as u32
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while flotilla_scheduler::ProcessIdentity::of(pid(1)).is_some() {
        assert!(Instant::now() < deadline, "attempt 1 was not stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&release, "").unwrap();
    let view = f
        .wait_for("train", "every job done", |v| {
            ["a", "b", "c"]
                .iter()
                .all(|id| job(v, id)["status"] == "succeeded")
        })
        .await;
    let stdout = |attempt: u32| {
        let path = dir
            .path()
            .join("jobs/train/a")
            .join(attempt.to_string())
            .join("stdout");
        std::fs::read_to_string(path).unwrap()
    };
    assert!(stdout(2).starts_with("node=gpu-2\n"), "{}", stdout(2));
    assert!(stdout(1).starts_with("node=gpu-1\n"), "{}", stdout(1));
    assert_eq!(job(&view, "a")["attempts"][1]["status"], "succeeded");

    // A queue whose pool the provisioner does not have runs as before.
    f.send("plain", held_job("p", &release)).await;
    let view = f
        .wait_for("plain", "an unplaced job done", |v| {
            job(v, "p")["status"] == "succeeded"
        })
        .await;
    assert_eq!(job(&view, "p")["node"], Value::Null);
    let out = std::fs::read_to_string(dir.path().join("jobs/plain/p/1/stdout")).unwrap();
    assert!(out.starts_with("node=\n"), "{out}");
    f.watch.abort();
}
