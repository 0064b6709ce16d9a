//! A study run on the `kubernetes` executor, against recorded API-server
//! exchanges (no cluster): the solver, the scheduler (a
//! `KubernetesExecutor` on a replayed client) and the run hosted in one
//! process on the embedded bus and a sled log.
//!
//! - the run creates one Job per trial, labelled with the study and the
//!   trial and carrying the trial's parameters in its environment, never
//!   more than `parallel` at once; the values the pods' termination
//!   messages hold reach the study, and the run finishes with exactly
//!   `budget` results;
//! - killed while two Jobs run, the control plane recovered from the same
//!   directory finds them by their attempt labels (the API server holds
//!   them) and adopts them: no Job is created again, no trial runs twice.
//!
//! The jobs run concurrently, so their requests interleave as they will:
//! the recording is a [`Cassette`], answering each request with the
//! exchange of the Job it names.

mod support;

use flotilla_kube_replay::{exchange, list, Cassette, Exchange, Seen};
use flotilla_messages::scheduler::param_text;
use flotilla_messages::Actor;
use flotilla_runner::DriverSettings;
use flotilla_scheduler::{job_name, Executor, KubernetesExecutor, ATTEMPT_KEY_LABEL};
use serde_json::{json, Value};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::ControlPlane;

const STUDY: &str = "kube-lr";
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const PODS: &str = "/api/v1/namespaces/default/pods";
const BUDGET: u64 = 3;

/// What each trial's pod says in its termination message.
fn value_of(trial: &str) -> f64 {
    match trial {
        "t1" => 0.5,
        "t2" => 0.25,
        "t3" => 0.125,
        other => panic!("the study has no trial {other} at budget {BUDGET}"),
    }
}

/// The Job of a trial's first attempt (the queue is the study).
fn name(trial: &str) -> String {
    job_name(STUDY, trial, 1)
}

/// A Job as the API server holds it: `created` (what was posted, or just
/// its name) with a uid, a resource version and `status`.
fn stored(created: Value, status: Value) -> Value {
    let mut job = created;
    job["apiVersion"] = json!("batch/v1");
    job["kind"] = json!("Job");
    job["metadata"]["namespace"] = json!("default");
    let uid = format!(
        "uid-{}",
        job["metadata"]["name"].as_str().unwrap_or_default()
    );
    job["metadata"]["uid"] = json!(uid);
    job["metadata"]["resourceVersion"] = json!("11");
    job["status"] = status;
    job
}

fn named(trial: &str) -> Value {
    json!({"metadata": {"name": name(trial)}})
}

fn active() -> Value {
    json!({"active": 1})
}

fn complete() -> Value {
    json!({"conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]})
}

/// A new attempt: its lookup by attempt key finds nothing (alike for every
/// attempt, so any may take it) and the create of its Job.
fn created(trial: &str) -> Vec<Exchange> {
    let lookup = "labelSelector=flotilla.dev%2Fattempt-key%3D";
    vec![
        exchange("GET", JOBS, vec![lookup], 200, list("JobList", vec![])),
        exchange("POST", JOBS, vec![], 201, stored(named(trial), json!({})))
            .containing(named(trial)),
    ]
}

/// The watcher's first list of the trial's Job (running).
fn listed(trial: &str, job: &Value) -> Exchange {
    let by_name = format!("metadata.name%3D{}", name(trial));
    let running = stored(job.clone(), active());
    exchange(
        "GET",
        JOBS,
        vec![&by_name],
        200,
        list("JobList", vec![running]),
    )
}

/// The watch of the trial's Job, answering `events`.
fn watch(trial: &str, events: &[Value]) -> Exchange {
    let by_name = format!("metadata.name%3D{}", name(trial));
    let mut watch = exchange("GET", JOBS, vec!["watch=true", &by_name], 200, json!(null));
    watch.body = events
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>()
        .into_bytes();
    watch
}

/// The trial's Job watched until it completes, its pod's termination
/// message read and the Job deleted.
fn runs_to_end(trial: &str, job: &Value) -> Vec<Exchange> {
    let job_name = name(trial);
    let done = json!({"type": "MODIFIED", "object": stored(job.clone(), complete())});
    let pod = json!({"metadata": {"name": format!("{job_name}-x7k2p")},
        "status": {"containerStatuses": [{"name": "job", "image": "trainer:1", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0,
                "message": format!("epoch 3\nRESULT={}\n", value_of(trial))}}}]}});
    let pods = format!("labelSelector=batch.kubernetes.io%2Fjob-name%3D{job_name}");
    let deleted = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    vec![
        listed(trial, job),
        watch(trial, &[done]),
        exchange("GET", PODS, vec![&pods], 200, list("PodList", vec![pod])),
        exchange(
            "DELETE",
            &format!("{JOBS}/{job_name}"),
            vec![],
            200,
            deleted,
        ),
    ]
}

/// The trial's Job watched while it keeps running: the watch is never
/// answered.
fn keeps_running(trial: &str) -> Vec<Exchange> {
    vec![listed(trial, &named(trial)), watch(trial, &[]).held()]
}

/// The restarted executor's lookup of an attempt by its key, finding the
/// Job `created` (as posted before the restart), still running.
fn adopted(created: &Value) -> Exchange {
    let key = created["metadata"]["labels"][ATTEMPT_KEY_LABEL]
        .as_str()
        .expect("the Job carries its attempt key");
    let selector = format!("labelSelector=flotilla.dev%2Fattempt-key%3D{key}");
    let running = stored(created.clone(), active());
    exchange(
        "GET",
        JOBS,
        vec![&selector],
        200,
        list("JobList", vec![running]),
    )
}

/// Runs `phase` in an actix system of its own on its own thread; when it
/// returns, the system and everything in it (tasks, effects half done,
/// clients) is dropped, as in a process that was killed.
fn in_process<F, Fut, T>(phase: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let thread = std::thread::spawn(move || actix_rt::System::new().block_on(phase()));
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn control_plane(dir: &Path, cassette: &Cassette) -> ControlPlane {
    let executor: Arc<dyn Executor> =
        Arc::new(KubernetesExecutor::new(cassette.client(), "default"));
    let settings = DriverSettings {
        // A restarted run reads its queue soon: the adopted Jobs may end
        // before the driver follows the scheduler's events again.
        reconcile_every: Duration::from_millis(500),
        ..DriverSettings::default()
    };
    ControlPlane::start(dir, vec![executor], settings).await
}

async fn start(cp: &ControlPlane) {
    let create = json!({"type": "create_study", "seed": 7, "budget": BUDGET,
        "sampler": "random", "bounds": {"lr": {"min": 0.001, "max": 0.1}}});
    let reply = cp.command(Actor::Solver, STUDY, create).await;
    assert!(reply.ok, "{reply:?}");
    let start = json!({"type": "start_run", "executor": "kubernetes", "image": "trainer:1",
        "command": ["python", "train.py"], "parallel": 2, "env": {"EPOCHS": "3"}});
    let reply = cp.command(Actor::StudyRun, STUDY, start).await;
    assert!(reply.ok, "{reply:?}");
}

/// The bodies of the Jobs created, by trial.
fn created_jobs(seen: &[Seen]) -> Vec<(String, Value)> {
    seen.iter()
        .filter(|s| s.line.starts_with("POST "))
        .map(|s| {
            let body = s.body.clone().expect("a Job in the body");
            let trial = body["metadata"]["labels"]["flotilla.dev/trial"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (trial, body)
        })
        .collect()
}

fn assert_all_used(cassette: &Cassette) {
    assert_eq!(
        cassette.unexpected(),
        Vec::<String>::new(),
        "requests not in the recording"
    );
    assert_eq!(
        cassette.unused(),
        Vec::<String>::new(),
        "recorded exchanges never made"
    );
}

/// The study ended with every trial told the value its pod said.
fn assert_told_every_value(study: &Value) {
    assert_eq!(study["counts"]["told"], BUDGET, "{study:#}");
    assert_eq!(study["counts"]["asked"], BUDGET, "{study:#}");
    let trials = study["trials"].as_array().unwrap();
    assert_eq!(trials.len() as u64, BUDGET);
    for t in trials {
        let id = t["trial_id"].as_str().unwrap();
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(t["value"], value_of(id), "{t}");
    }
}

/// A run finished with exactly `budget` results.
fn assert_finished(run: &Value) {
    assert_eq!(run["status"], "finished", "{run:#}");
    assert_eq!(run["counts"]["completed"], BUDGET, "{run:#}");
    for state in ["failed", "pruned", "running", "pending", "waiting"] {
        assert_eq!(run["counts"][state], 0, "{state}: {run:#}");
    }
}

#[test]
fn a_kubernetes_run_makes_a_labelled_job_per_trial_and_tells_their_termination_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (seen, study, run) = in_process(move || async move {
        let mut script = Vec::new();
        for trial in ["t1", "t2", "t3"] {
            script.extend(created(trial));
            script.extend(runs_to_end(trial, &named(trial)));
        }
        let cassette = Cassette::new(script);
        let cp = control_plane(&path, &cassette).await;
        start(&cp).await;
        let run = cp
            .wait_for(Actor::StudyRun, STUDY, "the run's end", |v| {
                v["status"] == "finished" || v["status"] == "failed"
            })
            .await;
        let study = cp.view(Actor::Solver, STUDY).await;
        assert_all_used(&cassette);
        (cassette.seen(), study, run)
    });
    assert_finished(&run);
    assert_told_every_value(&study);

    // One Job per trial, labelled, with the trial's parameters and the run's env.
    let jobs = created_jobs(&seen);
    let trials: Vec<&str> = jobs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(trials.len() as u64, BUDGET, "{trials:?}");
    for t in study["trials"].as_array().unwrap() {
        let id = t["trial_id"].as_str().unwrap();
        let (_, job) = jobs.iter().find(|(trial, _)| trial == id).expect("its Job");
        let labels = &job["metadata"]["labels"];
        assert_eq!(labels["flotilla.dev/study"], STUDY, "{labels}");
        assert_eq!(labels["flotilla.dev/trial"], id, "{labels}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "flotilla",
            "{labels}"
        );
        assert_eq!(job["metadata"]["name"], name(id));
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "trainer:1");
        assert_eq!(container["command"], json!(["python", "train.py"]));
        let env = container["env"].as_array().unwrap();
        let lr = param_text(&t["params"]["lr"]);
        for (var, value) in [
            ("ARQON_lr", lr.as_str()),
            ("FLOTILLA_PARAM_lr", lr.as_str()),
            ("FLOTILLA_STUDY", STUDY),
            ("FLOTILLA_TRIAL_ID", id),
            ("EPOCHS", "3"),
        ] {
            assert!(
                env.contains(&json!({"name": var, "value": value})),
                "{var}={value} not in {env:?}"
            );
        }
    }
    // Never more than `parallel` Jobs at once: created minus deleted.
    let mut alive = 0i32;
    for s in &seen {
        alive += i32::from(s.line.starts_with("POST ")) - i32::from(s.line.starts_with("DELETE "));
        assert!(alive <= 2, "more than 2 Jobs at once: {seen:#?}");
    }
}

#[test]
fn a_restarted_control_plane_adopts_the_jobs_that_run_instead_of_creating_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // First process: t1 ends; t2 and t3 run when it is killed.
    let seen = in_process(move || async move {
        let mut script = Vec::new();
        script.extend(created("t1"));
        script.extend(runs_to_end("t1", &named("t1")));
        for trial in ["t2", "t3"] {
            script.extend(created(trial));
            script.extend(keeps_running(trial));
        }
        let cassette = Cassette::new(script);
        let cp = control_plane(&path, &cassette).await;
        start(&cp).await;
        cp.wait_for(Actor::Solver, STUDY, "t1 told", |v| {
            v["counts"]["told"] == 1
        })
        .await;
        // Killed while both Jobs are watched (every recorded request made).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cassette.unused().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "never made: {:?}",
                cassette.unused()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cassette.unexpected(), Vec::<String>::new());
        cassette.seen()
    });
    let before = created_jobs(&seen);
    let mut trials: Vec<&str> = before.iter().map(|(t, _)| t.as_str()).collect();
    trials.sort_unstable();
    assert_eq!(trials, ["t1", "t2", "t3"]);

    // Second process, same directory: the API server holds t2's and t3's Jobs.
    let path = dir.path().to_path_buf();
    let running: Vec<(String, Value)> = before.into_iter().filter(|(t, _)| t != "t1").collect();
    let (seen, study, run, queue) = in_process(move || async move {
        let mut script = Vec::new();
        for (trial, job) in &running {
            script.push(adopted(job));
            script.extend(runs_to_end(trial, job));
        }
        let cassette = Cassette::new(script);
        let cp = control_plane(&path, &cassette).await;
        let run = cp
            .wait_for(Actor::StudyRun, STUDY, "the run's end", |v| {
                v["status"] == "finished" || v["status"] == "failed"
            })
            .await;
        let study = cp.view(Actor::Solver, STUDY).await;
        let queue = cp.view(Actor::Scheduler, STUDY).await;
        assert_all_used(&cassette);
        (cassette.seen(), study, run, queue)
    });
    assert!(
        created_jobs(&seen).is_empty(),
        "a Job was created again: {seen:#?}"
    );
    assert_finished(&run);
    assert_told_every_value(&study);
    // Each trial's job ran one attempt, the one adopted.
    let jobs = queue["jobs"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, BUDGET, "{queue:#}");
    for job in jobs {
        assert_eq!(
            (&job["status"], &job["attempt"]),
            (&json!("succeeded"), &json!(1)),
            "{job}"
        );
    }
}
