//! The scheduler survives SIGKILL: 8 local jobs run, the scheduler process
//! is killed, one job's process is killed too while the scheduler is down,
//! some jobs finish while it is down, and the restarted scheduler adopts
//! the live ones, collects the finished ones from their exit files and runs
//! the lost one again as a new attempt — never two live attempts of one
//! job, every result recorded exactly once. On both backends: the
//! embedded log and NATS (JetStream log).

use crate::support::{flotilla, json_lines, queue, wait_for_queue, FlotillaUp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const JOBS: usize = 8;

/// Each job logs its start and end (with the attempt) and prints its value.
fn script(runs: &Path, job: usize, sleep: f64) -> Vec<String> {
    let line = format!(
        "echo \"start $FLOTILLA_JOB_ID $FLOTILLA_ATTEMPT_NUMBER $(date +%s%N)\" >> {runs}; \
         sleep {sleep}; \
         echo \"end $FLOTILLA_JOB_ID $FLOTILLA_ATTEMPT_NUMBER $(date +%s%N)\" >> {runs}; \
         echo RESULT={job}",
        runs = runs.display()
    );
    vec!["sh".into(), "-c".into(), line]
}

/// Waits until the jobs' own log shows `n` attempts started.
fn wait_for_starts(runs: &Path, n: usize, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(runs).unwrap_or_default();
        let started = text.lines().filter(|l| l.starts_with("start ")).count();
        if started >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {started} of {n} jobs started within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn jobs(view: &Value) -> BTreeMap<String, Value> {
    view["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job_id"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}

/// (start, end) times per (job, attempt) from the jobs' own log.
fn intervals(runs: &Path) -> BTreeMap<(String, u32), (Option<u128>, Option<u128>)> {
    let text = std::fs::read_to_string(runs).unwrap_or_default();
    let mut out: BTreeMap<(String, u32), (Option<u128>, Option<u128>)> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [kind, job, attempt, at] = parts[..] else {
            panic!("bad line {line:?}")
        };
        let entry = out
            .entry((job.to_string(), attempt.parse().unwrap()))
            .or_default();
        let at: u128 = at.parse().unwrap();
        match kind {
            "start" => {
                assert!(entry.0.is_none(), "attempt {job}/{attempt} started twice");
                entry.0 = Some(at);
            }
            _ => entry.1 = Some(at),
        }
    }
    out
}

#[test]
fn sigkill_embedded_while_eight_jobs_run_adopts_collects_or_reruns_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let backend = ["--data-dir".to_string(), data];
    scenario(dir.path(), "crash-embedded", &backend, &[]);
}

#[test]
fn sigkill_nats_while_eight_jobs_run_adopts_collects_or_reruns_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = flotilla_bus::testing::NatsServer::start();
    let backend = ["--nats".to_string(), nats.url()];
    // NATS allows no local program until told: these jobs are `sh` scripts.
    scenario(
        dir.path(),
        "crash-nats",
        &backend,
        &["--allowed-commands", "sh"],
    );
}

/// Runs 8 jobs on queue `name`, kills the scheduler, kills job 8, restarts
/// and checks every result is recorded once; `backend` selects the log,
/// `settings` are more arguments of `up`.
fn scenario(dir: &Path, name: &str, backend: &[String], settings: &[&str]) {
    let runs = dir.join("runs.log");
    let mut args = vec!["--only", "scheduler"];
    args.extend(backend.iter().map(String::as_str));
    args.extend(settings);
    // Attempt files go to `FLOTILLA_JOBS_DIR` (the NATS backend has no data
    // dir); the restarted scheduler gets the same one.
    let jobs_dir = dir.join("jobs");
    let envs = [("FLOTILLA_JOBS_DIR", jobs_dir.as_os_str())];
    let mut up = FlotillaUp::start_with_env(&args, &envs, dir);
    let (status, reply) = up.send(
        "scheduler",
        name,
        &json!({"type": "configure_queue", "concurrency": JOBS}),
    );
    assert_eq!(status, 200, "{reply}");
    // Jobs 1-3 end while the scheduler is down; 4-8 outlive the restart;
    // job 8's process is killed while the scheduler is down.
    for job in 1..=JOBS {
        let sleep = if job <= 3 { 1.0 } else { 6.0 };
        let body = json!({"type": "submit", "job_id": format!("j{job}"),
            "spec": {"command": script(&runs, job, sleep)}});
        let (status, reply) = up.send("scheduler", name, &body);
        assert_eq!(status, 200, "{reply}");
    }
    let view = wait_for_queue(&up, name, "8 jobs running", Duration::from_secs(30), |v| {
        v["counts"]["running"] == json!(JOBS)
    });
    let victim = jobs(&view)["j8"]["handle"]["pid"].as_i64().unwrap() as i32;
    // "Running" means spawned; under load a shell can take a while to
    // write its first line. Kill only once every attempt has said so.
    wait_for_starts(&runs, JOBS, Duration::from_secs(30));
    up.kill();
    // SAFETY: kill(2) on the process group the scheduler created for job 8
    // (its pid, read from the job's handle).
    unsafe {
        libc::kill(-victim, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(1500));
    up.restart();
    let view = wait_for_queue(
        &up,
        name,
        "every job succeeded",
        Duration::from_secs(60),
        |v| v["counts"]["succeeded"] == json!(JOBS),
    );
    let jobs = jobs(&view);
    for job in 1..=JOBS {
        let record = &jobs[&format!("j{job}")];
        assert_eq!(record["value"], json!(job as f64), "{record}");
        let expected_attempt = if job == JOBS { 2 } else { 1 };
        assert_eq!(record["attempt"], json!(expected_attempt), "{record}");
    }
    // The jobs' own log: each attempt started once, attempts of one job
    // never overlapped, only job 8 ran twice.
    let seen = intervals(&runs);
    assert_eq!(seen.len(), JOBS + 1, "{seen:?}");
    let (lost_start, lost_end) = seen[&("j8".to_string(), 1)];
    let (rerun_start, _) = seen[&("j8".to_string(), 2)];
    assert!(
        lost_end.is_none(),
        "the killed attempt did not end by itself"
    );
    assert!(rerun_start.unwrap() > lost_start.unwrap());
    // The log: one result per job, one start per attempt.
    let stream = format!("scheduler/{name}");
    let out = flotilla(&["events", "--http", &up.url, "--stream", &stream]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_lines(&out.stdout);
    let mut succeeded: BTreeMap<String, u32> = BTreeMap::new();
    let mut started: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut lost = 0;
    for e in &events {
        let job = e["payload"]["job_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match e["type"].as_str().unwrap() {
            "job_succeeded" => *succeeded.entry(job).or_default() += 1,
            "job_started" => {
                let attempt = e["payload"]["attempt"].as_u64().unwrap();
                *started.entry((job, attempt)).or_default() += 1;
            }
            "job_lost" => lost += 1,
            _ => {}
        }
    }
    assert_eq!(succeeded.len(), JOBS);
    assert!(succeeded.values().all(|n| *n == 1), "{succeeded:?}");
    assert!(started.values().all(|n| *n == 1), "{started:?}");
    assert_eq!(lost, 1);
    let answered = queue(&up, name);
    up.terminate();
    // The log is intact, and a clean replay equals what the scheduler answered.
    let with_backend = |command: &[&str]| {
        let mut all: Vec<&str> = command.to_vec();
        all.extend(backend.iter().map(String::as_str));
        let out = flotilla(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    with_backend(&["audit"]);
    let replay = with_backend(&["replay", "--stream", &stream]);
    let replayed: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(replayed["state"], answered);
}
