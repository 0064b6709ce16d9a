//! The containerized fleet of `deploy/compose/` under faults (issue 14):
//! a 3-node NATS cluster (events stream at 3 replicas), 2 control-plane
//! replicas, 3 health agents on simulated GPU nodes and 2 inference
//! workers, every process with its own nkey and role, every HTTP call with
//! a bearer token. One run shows, in order:
//!
//! 1. every service healthy; predictions served by both workers;
//! 2. a study driven by the control plane (a `runner` on pool `gpu`);
//! 3. the NATS node that leads the events stream killed mid-run, while a
//!    client keeps sending commands: every acknowledged one is kept;
//! 4. an agent's network disconnected: its node turns unhealthy after the
//!    heartbeat timeout and is replaced (the replacement's agent starts as
//!    a new machine would);
//! 5. the control plane that drives the study killed: the other replica
//!    takes the lease and finishes it, with exactly the budget's results;
//! 6. `down` then `up`: every aggregate comes back as it was;
//! 7. `flotilla audit` (inside the fleet's network, as the auditor) passes.
//!
//! Every fault targets the test's own containers on the project's private
//! network; the test reaches them on published 127.0.0.1 ports.

use crate::support::compose::{get_json, post_json, run_ok, Fleet};
use crate::support::{node_statuses, wait_until};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUDGET: u64 = 40;
const STUDY: &str = "fleet";

/// Trials past this one wait for the gate file, so the run is surely
/// under way when its driver is killed, however long the faults before
/// that take.
const GATED_AFTER: u64 = 8;

/// Writes the trial script (and a `sleep` for it: the image has only sh)
/// into `dir`; `dir/go` opens the gate.
fn trials(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy("/bin/sleep", dir.join("sleep")).expect("copy /bin/sleep");
    let script = dir.join("eval.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             if [ \"${{FLOTILLA_TRIAL_ID#t}}\" -gt {GATED_AFTER} ]; then\n\
               while [ ! -e /opt/trials/go ]; do /opt/trials/sleep 0.2; done\n\
             fi\n\
             /opt/trials/sleep 1\n\
             echo \"RESULT=$ARQON_x\"\n"
        ),
    )
    .unwrap();
    for file in ["sleep", "eval.sh"] {
        std::fs::set_permissions(
            dir.join(file),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
}

/// The HTTP side of the fleet, as the test sees it.
struct Gateway<'a> {
    fleet: &'a Fleet,
    token: String,
}

impl Gateway<'_> {
    fn url(&self, replica: &str) -> String {
        self.fleet.url(replica, 8080)
    }

    fn query(&self, replica: &str, path: &str) -> Value {
        let (status, body) = get_json(
            &format!("{}/v1/query/{path}", self.url(replica)),
            &self.token,
        );
        if status == 200 {
            body["result"].clone()
        } else {
            Value::Null
        }
    }

    fn send(&self, replica: &str, actor: &str, id: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}/v1/cmd/{actor}/{id}", self.url(replica));
        post_json(&url, &self.token, body, None)
    }

    /// The replica whose `/metrics` says it drives the study.
    fn driver(&self) -> Option<&'static str> {
        let needle = format!("flotilla_study_run_active{{study=\"{STUDY}\"}} 1");
        ["control-plane-1", "control-plane-2"]
            .into_iter()
            .find(|replica| {
                let text = crate::support::http_client()
                    .get(format!("{}/metrics", self.url(replica)))
                    .bearer_auth(&self.token)
                    .send()
                    .and_then(|r| r.text())
                    .unwrap_or_default();
                text.lines().any(|l| l.trim() == needle)
            })
    }
}

/// The events stream as `asked` (a NATS node's monitoring port) describes
/// it (`config`, `cluster`...), once that node knows it.
fn events_stream(fleet: &Fleet, asked: &str) -> Option<Value> {
    let url = format!(
        "{}/jsz?accounts=true&streams=true&config=true",
        fleet.url(asked, 8222)
    );
    let jsz: Value = crate::support::http_client()
        .get(url)
        .send()
        .and_then(|r| r.json())
        .ok()?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .find(|s| s["name"] == "FLOTILLA_EVENTS")
        .cloned()
}

/// The NATS node that leads the events stream, as `asked` sees it.
fn stream_leader(fleet: &Fleet, asked: &str) -> Option<String> {
    events_stream(fleet, asked)?["cluster"]["leader"]
        .as_str()
        .filter(|leader| !leader.is_empty())
        .map(str::to_string)
}

/// How many requests a worker has served (HTTP and NATS alike).
fn served(fleet: &Fleet, worker: &str) -> f64 {
    let text = crate::support::http_client()
        .get(format!("{}/metrics", fleet.url(worker, 8080)))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    crate::support::inference::sum_of(
        &text,
        "carla_rl_inference_requests_total",
        &[("status", "success")],
    )
}

/// Sends `n` predictions on `flotilla.infer.carla-ppo` through nats-1 as
/// the fleet's inference client (its own nkey, allowed only `infer.>`).
fn predict_over_nats(fleet: &Fleet, dir: &Path, n: usize) {
    use flotilla_bus::nats::{NatsAuth, NatsBus};
    use flotilla_bus::{Bus, Message};
    let seed = dir.join("driver.nk");
    std::fs::write(&seed, fleet.token("nats/driver.nk")).unwrap();
    std::fs::set_permissions(&seed, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let url = fleet.url("nats-1", 4222).replace("http://", "nats://");
    let auth = NatsAuth {
        nkey_file: Some(seed),
        ..NatsAuth::default()
    };
    let body = serde_json::to_vec(&json!({"observations": [{"speed": 25.5, "steering": 0.1,
        "sensors": [0.8, 0.2, 0.5]}], "deterministic": true}))
    .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let bus = NatsBus::connect_with(&url, &auth)
                .await
                .expect("connect as driver");
            for _ in 0..n {
                let msg = Message::new("flotilla.infer.carla-ppo", body.clone());
                let reply = bus
                    .request(msg, Duration::from_secs(10))
                    .await
                    .expect("a prediction");
                assert_eq!(
                    reply.header("Status"),
                    Some("200"),
                    "{:?}",
                    String::from_utf8_lossy(&reply.payload)
                );
            }
        });
}

/// The commands a client sent around the NATS kill.
#[derive(Default)]
struct Sent {
    /// The ids whose reply was `ok`, and when it came.
    acked: Vec<(String, Instant)>,
    /// Replies that were not `ok` (or did not come).
    refused: usize,
}

impl Sent {
    fn acked_after(&self, at: Instant) -> usize {
        self.acked.iter().filter(|(_, t)| *t > at).count()
    }
}

/// Sends `create_study` commands (one id each) to a replica until
/// stopped, recording them in `sent`.
fn commands_in_flight(
    gateway_url: String,
    token: String,
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::Mutex<Sent>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for n in 0..2_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let id = format!("ack-{n}");
            let body = json!({"type": "create_study", "seed": n, "budget": 5,
                "bounds": {"x": {"min": 0.0, "max": 1.0}}});
            let (status, reply) = post_json(
                &format!("{gateway_url}/v1/cmd/solver/{id}"),
                &token,
                &body,
                Some(&id),
            );
            let ok = status == 200 && reply["ok"] == true;
            let mut sent = sent.lock().unwrap();
            if ok {
                sent.acked.push((id, Instant::now()));
            } else {
                sent.refused += 1;
            }
            drop(sent);
            // A steady stream, not a flood: a few hundred aggregates are
            // enough to see a loss, and each is checked later.
            std::thread::sleep(Duration::from_millis(if ok { 40 } else { 100 }));
        }
    })
}

/// Every aggregate's state through `replica`: (actor/id) → result (the
/// list of ids is one answer, unpaged).
fn every_aggregate(gw: &Gateway, replica: &str) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for actor in ["solver", "scheduler", "provisioner", "study_run"] {
        let list = gw.query(replica, actor);
        let ids = list["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("{actor}: no ids in {list}"));
        for id in ids.iter().filter_map(Value::as_str) {
            all.insert(
                format!("{actor}/{id}"),
                gw.query(replica, &format!("{actor}/{id}")),
            );
        }
    }
    // The workers' own streams (their model deployments), answered by them.
    for worker in ["w1", "w2"] {
        let stream = format!("inference/{worker}");
        all.insert(stream.clone(), gw.query(replica, &stream));
    }
    for (stream, state) in &all {
        assert!(
            !state.is_null(),
            "{stream} did not answer through {replica}"
        );
    }
    all
}

#[test]
fn the_containerized_fleet_heals_and_loses_nothing() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let trials_dir = dir.path().join("trials");
    trials(&trials_dir);
    let fleet = Fleet::new(
        "fleet",
        &trials_dir,
        &[
            ("FLOTILLA_LEASE_SECONDS", "4"),
            ("FLOTILLA_RECONCILE_SECONDS", "1"),
        ],
        dir.path(),
    );
    let services = [
        "control-plane-1",
        "control-plane-2",
        "agent-1",
        "agent-2",
        "agent-3",
        "worker-1",
        "worker-2",
    ];
    fleet.compose(&["up", "-d"]);
    fleet.wait_nats_healthy(&["nats-1", "nats-2", "nats-3"], Duration::from_secs(120));
    fleet.wait_healthy(&services, Duration::from_secs(180));
    let up_took = started.elapsed();
    let phase = |what: &str| {
        eprintln!(
            "compose fleet: {what} at {:.1}s",
            started.elapsed().as_secs_f64()
        )
    };
    phase("every service healthy");
    // The events stream has its three copies, on three servers.
    let stream = wait_until(Duration::from_secs(30), || events_stream(&fleet, "nats-1"))
        .unwrap_or_else(|| panic!("no events stream:\n{}", fleet.logs()));
    assert_eq!(stream["config"]["num_replicas"], 3, "{stream}");
    assert_eq!(
        stream["cluster"]["replicas"].as_array().map(Vec::len),
        Some(2),
        "{stream}"
    );
    let gw = Gateway {
        fleet: &fleet,
        token: fleet.token("admin.token"),
    };

    // 1. Predictions through both workers (each with the inference token).
    let inference = fleet.token("inference.token");
    for worker in ["worker-1", "worker-2"] {
        let body = json!({"observations": [{"speed": 25.5, "steering": 0.1, "sensors": [0.8, 0.2, 0.5]}],
            "deterministic": true});
        let (status, reply) = post_json(
            &format!("{}/predict", fleet.url(worker, 8080)),
            &inference,
            &body,
            None,
        );
        assert_eq!(status, 200, "{worker}: {reply}");
        assert_eq!(
            reply["actions"].as_array().map(Vec::len),
            Some(1),
            "{worker}: {reply}"
        );
    }

    // Over NATS, the two workers share the infer subject in their queue group.
    let served_before = [served(&fleet, "worker-1"), served(&fleet, "worker-2")];
    predict_over_nats(&fleet, dir.path(), 40);
    let by_nats = [
        served(&fleet, "worker-1") - served_before[0],
        served(&fleet, "worker-2") - served_before[1],
    ];
    assert_eq!(by_nats[0] + by_nats[1], 40.0, "{by_nats:?}");
    assert!(
        by_nats.iter().all(|n| *n > 0.0),
        "one worker served all: {by_nats:?}"
    );

    // The pool's three nodes are up, each with its agent.
    wait_until(Duration::from_secs(60), || {
        let pool = gw.query("control-plane-1", "provisioner/gpu");
        let active = node_statuses(&pool)
            .values()
            .filter(|s| *s == "active")
            .count();
        (active == 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the pool's nodes never came up: {}\n{}",
            gw.query("control-plane-1", "provisioner/gpu"),
            fleet.logs()
        )
    });

    phase("predictions served, the pool's nodes active");
    // 2. A study that the control plane runs on the pool by itself.
    let create = json!({"type": "create_study", "seed": 5, "budget": BUDGET,
        "bounds": {"x": {"min": -4.0, "max": 4.0}},
        "runner": {"command": ["/opt/trials/eval.sh"], "parallel": 4, "pool": "gpu",
                   "backoff_limit": 3, "timeout_seconds": 300}});
    let (status, reply) = gw.send("control-plane-1", "solver", STUDY, &create);
    assert_eq!(status, 200, "{reply}");
    let completed = |replica: &str| {
        gw.query(replica, &format!("study_run/{STUDY}"))["counts"]["completed"].as_u64()
    };
    wait_until(Duration::from_secs(60), || {
        completed("control-plane-2").filter(|c| *c >= 3)
    })
    .unwrap_or_else(|| {
        panic!(
            "the run made no progress: {}\n{}",
            gw.query("control-plane-2", "study_run/fleet"),
            fleet.logs()
        )
    });

    phase("the run is under way");
    // 3 + 4. Kill the events stream's leader while commands flow, and cut
    // agent-2 off the network.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::Mutex::new(Sent::default()));
    let sender = commands_in_flight(
        gw.url("control-plane-2"),
        gw.token.clone(),
        stop.clone(),
        sent.clone(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let leader = wait_until(Duration::from_secs(30), || stream_leader(&fleet, "nats-1"))
        .unwrap_or_else(|| panic!("the events stream has no leader:\n{}", fleet.logs()));
    fleet.compose(&["kill", &leader]);
    let killed_at = Instant::now();
    // The stream elects another leader among the two left.
    let survivor = ["nats-1", "nats-2", "nats-3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let new_leader = wait_until(Duration::from_secs(60), || {
        stream_leader(&fleet, survivor).filter(|l| *l != leader)
    })
    .unwrap_or_else(|| panic!("no new leader after {leader} died:\n{}", fleet.logs()));
    let agent2 = fleet.container("agent-2");
    run_ok(
        "docker",
        &["network", "disconnect", &fleet.network(), &agent2],
        &[],
    );
    let cut_at = Instant::now();

    // gpu-2 misses its heartbeats: unhealthy, then a replacement is asked
    // for, which registers once its agent boots.
    let replacement = wait_until(Duration::from_secs(90), || {
        let pool = gw.query("control-plane-2", "provisioner/gpu");
        let nodes = node_statuses(&pool);
        let gone = nodes.get("gpu-2").is_some_and(|s| s != "active");
        let new = nodes.iter().find(|(id, s)| {
            !["gpu-1", "gpu-2", "gpu-3"].contains(&id.as_str()) && *s == "registering"
        });
        gone.then_some(()).and(new.map(|(id, _)| id.clone()))
    })
    .unwrap_or_else(|| {
        panic!(
            "gpu-2 was not replaced: {}\n{}",
            gw.query("control-plane-2", "provisioner/gpu"),
            fleet.logs()
        )
    });
    let detected = cut_at.elapsed();
    phase("gpu-2 unhealthy, its replacement asked for");
    fleet.set_env("FLOTILLA_SPARE_NODE", &replacement);
    // Its secrets first (only its own nkey), then the agent itself; the
    // rest of the fleet is left as the faults made it.
    fleet.compose(&["--profile", "spare", "up", "--no-deps", "share-agent-spare"]);
    fleet.compose(&["--profile", "spare", "up", "-d", "--no-deps", "agent-spare"]);
    wait_until(Duration::from_secs(90), || {
        let nodes = node_statuses(&gw.query("control-plane-2", "provisioner/gpu"));
        let healed = nodes.get(&replacement).is_some_and(|s| s == "active")
            && nodes.get("gpu-2").is_none_or(|s| s == "terminated");
        healed.then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{replacement} did not take gpu-2's place: {}\n{}",
            gw.query("control-plane-2", "provisioner/gpu"),
            fleet.logs()
        )
    });
    let replaced = cut_at.elapsed();
    // Commands are acknowledged again after the kill (the stream's new
    // leader took over); then the client stops.
    wait_until(Duration::from_secs(90), || {
        (sent.lock().unwrap().acked_after(killed_at) >= 10).then_some(())
    })
    .unwrap_or_else(|| {
        let sent = sent.lock().unwrap();
        panic!(
            "no commands acknowledged after the NATS kill: {} in all, {} after, {} refused\n{}",
            sent.acked.len(),
            sent.acked_after(killed_at),
            sent.refused,
            fleet.logs()
        )
    });
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let (acked, refused) = (sent.acked, sent.refused);
    let acked_after_kill = acked.iter().filter(|(_, at)| *at > killed_at).count();
    let acked_again = acked
        .iter()
        .find(|(_, at)| *at > killed_at)
        .map_or(0.0, |(_, at)| (*at - killed_at).as_secs_f64());
    assert!(
        acked.len() > acked_after_kill,
        "no command was acknowledged before the kill"
    );
    fleet.compose(&["start", &leader]);

    phase("gpu-2 replaced");
    // 5. Kill the replica that drives the study; the other finishes it.
    let driver = wait_until(Duration::from_secs(30), || gw.driver())
        .unwrap_or_else(|| panic!("no replica drives the study:\n{}", fleet.logs()));
    let other = if driver == "control-plane-1" {
        "control-plane-2"
    } else {
        "control-plane-1"
    };
    let before_kill = completed(other).unwrap_or(0);
    assert!(
        before_kill <= GATED_AFTER,
        "the gate did not hold: {before_kill}"
    );
    fleet.compose(&["kill", driver]);
    // The gated trials may go on now, on the other replica.
    std::fs::write(trials_dir.join("go"), "").unwrap();
    let run = wait_until(Duration::from_secs(120), || {
        let run = gw.query(other, &format!("study_run/{STUDY}"));
        (run["status"] == "finished").then_some(run)
    })
    .unwrap_or_else(|| {
        panic!(
            "{other} did not finish the run: {}\n{}",
            gw.query(other, "study_run/fleet"),
            fleet.logs()
        )
    });
    let study = gw.query(other, &format!("solver/{STUDY}"));
    assert_eq!(study["counts"]["told"], BUDGET, "{study}");
    assert_eq!(run["counts"]["completed"], BUDGET, "{run}");
    phase("the other replica finished the run");
    fleet.compose(&["start", driver]);
    fleet.wait_healthy(&[driver], Duration::from_secs(120));

    // 6. Every acknowledged command is in the log; then down and up: every
    // aggregate comes back as it was.
    let before = every_aggregate(&gw, other);
    for (id, _) in &acked {
        let study = before
            .get(&format!("solver/{id}"))
            .unwrap_or_else(|| panic!("acknowledged {id} lost: no such study"));
        assert_eq!(
            study["status"], "running",
            "acknowledged {id} lost: {study}"
        );
    }
    fleet.compose(&["--profile", "spare", "down", "-t", "5"]);
    fleet.compose(&["--profile", "spare", "up", "-d"]);
    fleet.wait_nats_healthy(&["nats-1", "nats-2", "nats-3"], Duration::from_secs(120));
    fleet.wait_healthy(&services, Duration::from_secs(180));
    phase("down and up again");
    let after = every_aggregate(&gw, "control-plane-1");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the aggregates differ across down/up"
    );
    for (stream, state) in &before {
        // The pool goes on living (heartbeats of restarted agents); the
        // rest is at rest and must be exactly as it was.
        if stream.starts_with("provisioner/") {
            let (was, is) = (node_statuses(state), node_statuses(&after[stream]));
            assert_eq!(was, is, "{stream} changed across down/up");
        } else {
            assert_eq!(
                Some(state),
                after.get(stream),
                "{stream} changed across down/up"
            );
        }
    }

    // 7. The audit, as the auditor, inside the fleet's network.
    fleet.compose(&["--profile", "tools", "up", "--no-deps", "share-audit"]);
    let (ok, stdout, stderr) = fleet.run_in("cli", &["audit", "--nats-nkey", "/secrets/audit.nk"]);
    assert!(ok, "audit failed:\n{stdout}\n{stderr}");

    eprintln!(
        "compose fleet: up {:.1}s; predictions over NATS w1/w2 {by_nats:?}; {} commands acknowledged around the NATS kill ({acked_after_kill} after it, the first {acked_again:.1}s after; {refused} refused), all kept; \
         stream leader {leader} killed, {new_leader} took over; gpu-2 replaced by {replacement}: unhealthy + replacement asked {:.1}s, replaced {:.1}s after the cut; \
         driver {driver} killed at {before_kill}/{BUDGET}, {other} finished; {} aggregates equal across down/up; total {:.1}s",
        up_took.as_secs_f64(),
        acked.len(),
        detected.as_secs_f64(),
        replaced.as_secs_f64(),
        before.len(),
        started.elapsed().as_secs_f64()
    );
}
