//! The CLI of studies that run themselves in `flotilla up`: `flotilla run
//! --remote` (and `--nats`) creates the study there, starts its run and
//! follows it to the local run's summary; Ctrl-C detaches and the run goes
//! on; `flotilla study watch` re-attaches; `study pause|resume|stop` steer
//! it. Real `up` processes, real subprocess jobs, a real nats-server.

use crate::support::{flotilla, flotilla_bin, queue, FlotillaUp};
use flotilla_bus::testing::NatsServer;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a state the tests wait for may take (a generous bound for a
/// loaded machine; nothing is timed).
const WITHIN: Duration = Duration::from_secs(120);

/// An executable script `dir/<name>`.
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::canonicalize(&path).unwrap().display().to_string()
}

/// `(x - 2)^2` of the trial's `x`.
const QUADRATIC: &str =
    "awk -v x=\"$ARQON_x\" 'BEGIN { printf \"RESULT=%.17g\\n\", (x - 2) * (x - 2) }'\n";

/// A study config `dir/<name>.json` over `x` in [-5, 10].
fn config(dir: &Path, name: &str, seed: u64, budget: u64) -> String {
    let path = dir.join(format!("{name}.json"));
    let text = json!({"seed": seed, "budget": budget, "bounds": {"x": {"min": -5, "max": 10}}});
    std::fs::write(&path, text.to_string()).unwrap();
    path.display().to_string()
}

/// `flotilla run --config <config> --script <script> <extra>`, not started.
fn run_command(config: &str, script: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(flotilla_bin());
    command
        .args(["run", "--config", config, "--script", script])
        .args(extra)
        .env_remove("FLOTILLA_NATS")
        .env_remove("FLOTILLA_DATA_DIR")
        .env_remove("FLOTILLA_URL");
    command
}

/// The summary a run printed.
fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no summary ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The run of `study` as its query answers it (asserting 200).
fn run_view(up: &FlotillaUp, study: &str) -> Value {
    let (status, body) = up.get(&format!("/v1/query/study_run/{study}"));
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

/// Polls the run of `study` until `cond` holds; that view.
fn wait_for_run(up: &FlotillaUp, study: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let view = run_view(up, study);
        if cond(&view) {
            return view;
        }
        if Instant::now() > deadline {
            panic!("{what} not reached: {view:#}\n{}", up.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A script that waits until the file `gate` exists, then prints `RESULT=x`.
fn gated(dir: &Path, gate: &Path) -> String {
    script(
        dir,
        "gated.sh",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done\necho RESULT=$ARQON_x\n",
            gate.display()
        ),
    )
}

#[test]
fn run_remote_runs_the_study_in_the_control_plane_and_prints_the_local_summary() {
    let dir = tempfile::tempdir().unwrap();
    let up = FlotillaUp::start(&[], dir.path());
    let conf = config(dir.path(), "quad", 1, 12);
    let eval = script(dir.path(), "eval.sh", QUADRATIC);

    let out = run_command(&conf, &eval, &["--parallel", "4", "--remote", &up.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), up.log());
    let s = summary(&out);
    assert_eq!(s["study"], "quad");
    assert_eq!(s["control_plane"], up.url);
    assert_eq!(s["executor"], "local");
    assert_eq!(s["status"], "completed", "{s:#}");
    assert_eq!(s["budget"], 12);
    assert_eq!(s["trials"]["completed"], 12, "{s:#}");
    assert_eq!(s["trials"]["failed"], 0);
    assert_eq!(s["trials"]["not_evaluated"], 0);
    assert_eq!(s["run"]["status"], "finished");
    let best = s["best_value"].as_f64().expect("a best value");
    let x = s["best_params"]["x"].as_f64().expect("best params");
    assert!((best - (x - 2.0) * (x - 2.0)).abs() < 1e-9, "{s:#}");
    assert!(s["best_trial_id"].is_string());

    // The control plane ran them: 12 jobs of queue `quad`, each once.
    let jobs = queue(&up, "quad")["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 12);
    assert!(jobs
        .iter()
        .all(|j| j["status"] == "succeeded" && j["attempt"] == 1));
    let view = run_view(&up, "quad");
    assert_eq!(view["spec"]["command"], json!([eval]));
    assert_eq!(view["spec"]["parallel"], 4);

    // Again: the study is resumed, its finished run only summarised.
    let again = run_command(&conf, &eval, &["--parallel", "4", "--remote", &up.url])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("resuming study quad"));
    assert_eq!(summary(&again)["trials"], s["trials"]);

    // Another config under the same name is refused, naming both.
    let other = config(dir.path(), "other", 2, 12);
    let refused = run_command(&other, &eval, &["--study", "quad", "--remote", &up.url])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("exists with a different config"),
        "{}",
        stderr(&refused)
    );

    // The script must be a file the control plane can run by its path;
    // bad flags are refused before anything is sent.
    let missing = run_command(&conf, "./nope.sh", &["--study", "q2", "--remote", &up.url])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("script: ./nope.sh"),
        "{}",
        stderr(&missing)
    );
    let image = run_command(
        &conf,
        &eval,
        &["--study", "q2", "--image", "i:1", "--remote", &up.url],
    )
    .output()
    .unwrap();
    assert_eq!(image.status.code(), Some(2));
    assert!(stderr(&image).contains("image:"), "{}", stderr(&image));
    let (status, _) = up.get("/v1/query/solver/q2");
    assert_eq!(status, 404, "nothing was created for refused flags");
}

/// A follower (`run --remote`, `study watch`) running, its stderr read
/// line by line as it comes.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    seen: Vec<String>,
}

impl Follower {
    fn spawn(mut command: Command) -> Follower {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Follower {
            child,
            lines,
            reader,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line holding `needle`.
    fn wait_line(&mut self, needle: &str) {
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let line = self
                .lines
                .recv_timeout(WITHIN)
                .unwrap_or_else(|_| panic!("no line with {needle:?}: {:?}", self.seen));
            self.seen.push(line);
        }
    }

    /// Its end: the exit status, stdout and all of stderr.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<u8>, String) {
        let out = self.child.wait_with_output().unwrap();
        self.reader.join().unwrap();
        self.seen.extend(self.lines.try_iter());
        (out.status, out.stdout, self.seen.join("\n"))
    }
}

#[test]
fn ctrl_c_detaches_the_run_goes_on_and_study_watch_reattaches_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = FlotillaUp::start(&[], dir.path());
    let conf = config(dir.path(), "gate", 3, 6);
    let gate = dir.path().join("open");
    let eval = gated(dir.path(), &gate);

    let mut run = Follower::spawn(run_command(
        &conf,
        &eval,
        &["--parallel", "2", "--remote", &up.url],
    ));
    run.wait_line("Ctrl-C detaches");
    // Both slots hold a job that waits at the gate: the run is mid-way.
    wait_for_run(&up, "gate", "two running jobs", |v| {
        v["counts"]["running"] == 2
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(run.child.id() as i32, libc::SIGINT);
    }
    let (status, stdout, text) = run.finish();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(stdout.is_empty(), "no summary when detached");
    assert!(
        text.contains("detached: the run of study gate goes on"),
        "{text}"
    );
    let watch_hint = format!("flotilla study watch gate --http {}", up.url);
    assert!(text.contains(&watch_hint), "{text}");
    assert!(text.contains(&format!("flotilla study stop gate --http {}", up.url)));

    // The run goes on without its client: still running, nothing told yet.
    let view = run_view(&up, "gate");
    assert_eq!(view["status"], "running", "{view:#}");
    assert_eq!(view["counts"]["completed"], 0);

    // Re-attached, the follower waits through a SIGKILL and restart of
    // the control plane, and prints the summary at the run's end.
    let mut watch = Follower::spawn({
        let mut command = Command::new(flotilla_bin());
        command.args(["study", "watch", "gate", "--http", &up.url]);
        command
    });
    watch.wait_line("run running");
    up.restart();
    std::fs::write(&gate, "").unwrap();
    let (status, stdout, text) = watch.finish();
    assert!(status.success(), "{text}\n{}", up.log());
    let s: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(s["status"], "completed", "{s:#}");
    assert_eq!(s["trials"]["completed"], 6);
    assert_eq!(s["run"]["status"], "finished");
    assert_eq!(run_view(&up, "gate")["status"], "finished");
    let jobs = queue(&up, "gate")["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 6, "each trial ran once: {jobs:#?}");
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"));
}

#[test]
fn study_pause_resume_and_stop_steer_a_run_and_watch_knows_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let up = FlotillaUp::start(&[], dir.path());
    // A gate never opened: the jobs run until they are cancelled.
    let eval = gated(dir.path(), &dir.path().join("never"));
    let create = json!({"type": "create_study", "seed": 4, "budget": 8,
                        "bounds": {"x": {"min": -5, "max": 10}}});
    assert_eq!(up.send("solver", "long", &create).0, 200);
    let start = json!({"type": "start_run", "command": [eval], "parallel": 2});
    let (status, reply) = up.send("study_run", "long", &start);
    assert_eq!(status, 200, "{reply}");
    wait_for_run(&up, "long", "two running jobs", |v| {
        v["counts"]["running"] == 2
    });

    let paused = flotilla(&["study", "pause", "long", "--http", &up.url]);
    assert!(paused.status.success(), "{}", stderr(&paused));
    assert_eq!(run_view(&up, "long")["status"], "paused");
    let resumed = flotilla(&["study", "resume", "long", "--http", &up.url]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(run_view(&up, "long")["status"], "running");

    let stopped = flotilla(&[
        "study", "stop", "long", "--reason", "enough", "--http", &up.url,
    ]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    let result: Value = serde_json::from_slice(&stopped.stdout).unwrap();
    assert_eq!(result["status"], "stopped");
    let view = wait_for_run(&up, "long", "the cancelled jobs ended", |v| {
        v["counts"]["pending"] == 0 && v["counts"]["running"] == 0
    });
    assert_eq!(view["status"], "stopped");
    assert_eq!(view["reason"], "enough");
    assert_eq!(view["running"], json!([]));
    let jobs = queue(&up, "long")["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 2, "no job started after the stop");
    assert!(jobs.iter().all(|j| j["status"] == "cancelled"), "{jobs:#?}");

    // Stopping twice is refused (1); the stopped run's summary: nothing
    // completed (exit 1, as a local run with no result).
    let again = flotilla(&["study", "stop", "long", "--http", &up.url]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("INVALID_STATE"),
        "{}",
        stderr(&again)
    );
    let watched = flotilla(&["study", "watch", "long", "--http", &up.url]);
    assert_eq!(watched.status.code(), Some(1), "{}", stderr(&watched));
    let s = summary(&watched);
    assert_eq!(s["run"]["status"], "stopped");
    assert_eq!(s["run"]["reason"], "enough");
    assert_eq!(s["trials"]["completed"], 0);

    // A study without a run: a clear error, exit 2.
    for verb in ["watch", "stop", "pause"] {
        let none = flotilla(&["study", verb, "nosuch", "--http", &up.url]);
        assert_eq!(none.status.code(), Some(2), "{verb}: {}", stderr(&none));
        assert!(
            stderr(&none).contains("study nosuch: no run in the control plane"),
            "{verb}: {}",
            stderr(&none)
        );
    }
}

#[test]
fn run_nats_starts_and_follows_a_run_without_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let eval = script(dir.path(), "eval.sh", QUADRATIC);
    // On NATS the local executor runs only what it is allowed to.
    let up = FlotillaUp::start(&["--nats", &url, "--allowed-commands", &eval], dir.path());
    let conf = config(dir.path(), "viabus", 5, 12);

    let out = run_command(&conf, &eval, &["--parallel", "4", "--nats", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), up.log());
    let s = summary(&out);
    assert_eq!(s["control_plane"], url);
    assert_eq!(s["status"], "completed", "{s:#}");
    assert_eq!(s["trials"]["completed"], 12);
    assert_eq!(s["run"]["status"], "finished");
    assert_eq!(run_view(&up, "viabus")["counts"]["completed"], 12);

    let watched = flotilla(&["study", "watch", "viabus", "--nats", &url]);
    assert!(watched.status.success(), "{}", stderr(&watched));
    assert_eq!(summary(&watched)["trials"], s["trials"]);
    let stop = flotilla(&["study", "stop", "viabus", "--nats", &url]);
    assert_eq!(stop.status.code(), Some(1), "a finished run cannot stop");
    assert!(
        stderr(&stop).contains("already finished"),
        "{}",
        stderr(&stop)
    );
}
