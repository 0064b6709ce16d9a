//! The scheduler hosted on the real embedded backend (sled in a temp dir,
//! in-process subjects, real subprocesses): queue signals for the
//! provisioner, cancelling a running attempt, retries with backoff through
//! the effects, and the manifests executor.

use flotilla_bus::embedded::{EmbeddedBus, SledLog};
use flotilla_host::{
    AggregateRegistry, EffectHandler, Execute, HostConfig, HostDeps, HostMetrics, Query,
};
use flotilla_messages::scheduler::QueueSignal;
use flotilla_messages::{CommandRequest, Reply, Subjects};
use flotilla_scheduler::ManifestsExecutor;
use flotilla_scheduler::{
    AllowedCommands, Executor, LocalExecutor, Queue, QueueSignals, SchedulerEffects,
    SchedulerMetrics,
};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Host {
    registry: Arc<AggregateRegistry<Queue>>,
    deps: HostDeps,
    metrics: SchedulerMetrics,
}

fn host(dir: &Path) -> Host {
    host_allowing(dir, AllowedCommands::any())
}

/// A host whose local executor runs only what `allowed` names.
fn host_allowing(dir: &Path, allowed: AllowedCommands) -> Host {
    let deps = HostDeps {
        log: Arc::new(SledLog::open(&dir.join("log")).expect("open log")),
        bus: Arc::new(EmbeddedBus::new()),
        config: Arc::new(HostConfig::default()),
        metrics: HostMetrics::unregistered(),
    };
    let metrics = SchedulerMetrics::unregistered();
    let executors: Vec<Arc<dyn Executor>> = vec![
        Arc::new(LocalExecutor::new(dir.join("jobs"), allowed.clone())),
        Arc::new(ManifestsExecutor::new(dir.join("manifests"), "default")),
    ];
    let effects = SchedulerEffects::new(executors, metrics.clone());
    let handler: Arc<dyn EffectHandler<Queue>> = effects.clone();
    let registry = AggregateRegistry::<Queue>::with_settings(deps.clone(), Some(handler), allowed);
    effects.attach(registry.clone());
    Host {
        registry,
        deps,
        metrics,
    }
}

impl Host {
    async fn send(&self, queue: &str, command: Value) -> Reply {
        let request = CommandRequest::from_value(command, None).unwrap();
        self.registry
            .get(queue)
            .unwrap()
            .send(Execute {
                request,
                correlation_id: None,
            })
            .await
            .unwrap()
    }

    async fn view(&self, queue: &str) -> Value {
        let reply = self.registry.get(queue).unwrap().send(Query).await.unwrap();
        reply.result.unwrap()
    }

    async fn wait_for(&self, queue: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let view = self.view(queue).await;
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
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id)
        .unwrap()
}

#[actix_rt::test]
async fn queue_signals_carry_pending_and_running_per_pool() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path());
    let mut signals = h
        .deps
        .bus
        .subscribe("flotilla.signal.queue.>")
        .await
        .unwrap();
    let task = QueueSignals::new(
        h.registry.clone(),
        h.deps.bus.clone(),
        Subjects::default(),
        h.metrics.clone(),
    )
    .start()
    .await
    .unwrap();
    let reply = h
        .send(
            "gpuq",
            json!({"type": "configure_queue", "concurrency": 2, "pool": "a100"}),
        )
        .await;
    assert!(reply.ok, "{reply:?}");
    for i in 0..3 {
        let submit = json!({"type": "submit", "job_id": format!("j{i}"),
            "spec": {"command": ["sleep", "0.5"], "expects_value": false}});
        assert!(h.send("gpuq", submit).await.ok);
    }
    // Some signal shows 2 running and 1 pending in pool a100, then the end.
    let mut saw_full = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), signals.next())
            .await
            .expect("a signal")
            .expect("the bus is open");
        assert_eq!(msg.subject, "flotilla.signal.queue.gpuq");
        let signal: QueueSignal = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!((signal.pool.as_str(), signal.concurrency), ("a100", 2));
        assert!(signal.running <= 2, "{signal:?}");
        saw_full |= signal.running == 2 && signal.pending == 1;
        if saw_full && signal.running == 0 && signal.pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the queue never drained");
    }
    let jobs = h
        .metrics
        .jobs
        .with_label_values(&["gpuq", "succeeded"])
        .get();
    assert_eq!(jobs, 3);
    task.abort();
}

#[actix_rt::test]
async fn cancel_stops_a_running_attempt_and_its_late_result_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path());
    let submit = json!({"type": "submit", "job_id": "long",
        "spec": {"command": ["sleep", "30"], "kill_grace_seconds": 0.2}});
    assert!(h.send("q", submit).await.ok);
    let view = h
        .wait_for("q", "running", |v| job(v, "long")["status"] == "running")
        .await;
    let pid = job(&view, "long")["handle"]["pid"].as_u64().unwrap() as u32;
    let cancel = h
        .send(
            "q",
            json!({"type": "cancel", "job_id": "long", "reason": "not needed"}),
        )
        .await;
    assert!(cancel.ok, "{cancel:?}");
    // The process group is gone soon, and the job stays cancelled.
    let deadline = Instant::now() + Duration::from_secs(10);
    while flotilla_scheduler::ProcessIdentity::of(pid).is_some() {
        assert!(Instant::now() < deadline, "the attempt was not stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = h.view("q").await;
    assert_eq!(job(&view, "long")["status"], "cancelled");
    assert_eq!(job(&view, "long")["reason"], "not needed");
}

#[actix_rt::test]
async fn a_failing_job_is_retried_after_its_backoff_until_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path());
    let count = dir.path().join("count");
    let line = format!("echo x >> {}; exit 2", count.display());
    let submit = json!({"type": "submit", "job_id": "flaky",
        "spec": {"command": ["sh", "-c", line], "backoff_limit": 2, "backoff_seconds": 0.2}});
    assert!(h.send("q", submit).await.ok);
    let view = h
        .wait_for("q", "failed for good", |v| {
            job(v, "flaky")["status"] == "failed"
        })
        .await;
    let record = job(&view, "flaky");
    assert_eq!(record["attempt"], 3);
    assert_eq!(record["exit_code"], 2);
    let runs = std::fs::read_to_string(&count).unwrap();
    assert_eq!(runs.lines().count(), 3);
}

#[actix_rt::test]
async fn a_manifests_queue_writes_the_job_and_succeeds_without_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path());
    let configure = json!({"type": "configure_queue", "concurrency": 4, "executor": "manifests"});
    assert!(h.send("mq", configure).await.ok);
    let submit = json!({"type": "submit", "job_id": "t1", "spec": {
        "command": ["python", "train.py"], "study": "s", "trial_id": "t1",
        "params": {"lr": 0.1},
        "kubernetes": {"image": "trainer:1", "gpus": 1, "limits": {"memory": "1Gi"}}}});
    assert!(h.send("mq", submit).await.ok);
    let view = h
        .wait_for("mq", "written", |v| job(v, "t1")["status"] == "succeeded")
        .await;
    let path = job(&view, "t1")["handle"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("nvidia.com/gpu: '1'"), "{text}");
    assert!(
        text.contains("app.kubernetes.io/managed-by: flotilla"),
        "{text}"
    );
    // Without kubernetes settings, the job fails saying what is missing.
    let bare = json!({"type": "submit", "job_id": "t2", "spec": {"command": ["x"]}});
    assert!(h.send("mq", bare).await.ok);
    let view = h
        .wait_for("mq", "refused", |v| job(v, "t2")["status"] == "failed")
        .await;
    let reason = job(&view, "t2")["reason"].as_str().unwrap();
    assert!(reason.contains("spec.kubernetes.image"), "{reason}");
}

#[actix_rt::test]
async fn a_job_the_allowlist_refuses_is_rejected_at_submit_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let h = host_allowing(
        dir.path(),
        AllowedCommands::parse(["/opt/flotilla-jobs/"]).unwrap(),
    );
    let submit = json!({"type": "submit", "job_id": "pwn",
        "spec": {"command": ["touch", marker.display().to_string()], "expects_value": false}});
    let reply = h.send("locked", submit).await;
    let error = reply.error.expect("refused");
    assert_eq!(error.code, "COMMAND_NOT_ALLOWED");
    assert!(
        error.message.contains("program \"touch\""),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("scheduler.local.allowed_commands"),
        "{}",
        error.message
    );
    let query = h.registry.query("locked").await;
    assert_eq!(
        query.error.expect("no queue").code,
        "NOT_FOUND",
        "nothing recorded"
    );
    // A manifests queue is not the local executor's: the same job is accepted.
    let configure = json!({"type": "configure_queue", "concurrency": 1, "executor": "manifests"});
    assert!(h.send("k8s", configure).await.ok);
    let submit = json!({"type": "submit", "job_id": "m", "spec": {"command": ["touch", "x"],
        "expects_value": false, "kubernetes": {"image": "busybox:1"}}});
    let reply = h.send("k8s", submit).await;
    assert!(reply.ok, "{reply:?}");
    assert!(!marker.exists(), "a refused job ran");
}
