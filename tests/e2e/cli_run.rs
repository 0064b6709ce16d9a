//! End-to-end: `flotilla run` (ArqonHPO-compatible) on the embedded backend
//! with real shell scripts — parallel trials, failures and timeouts, SIGKILL
//! and resume from the state file, config errors — and `ask`/`tell`/`study
//! show` on the log it wrote.

use crate::support::flotilla_bin;
use flotilla_host::Aggregate;
use flotilla_messages::solver::{
    trial_number, Lease, SolverCommand, SolverEvent, DEFAULT_LEASE_SECONDS,
};
use flotilla_solver::Study;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A quadratic with its minimum at (1, -2); every evaluation appends
/// `<trial_id>` to `evals.txt` first. `extra` runs before the result.
fn script(dir: &Path, extra: &str) -> String {
    let path = dir.join("eval.sh");
    let body = format!(
        "#!/bin/sh\n\
         echo \"$FLOTILLA_TRIAL_ID\" >> \"{evals}\"\n\
         n=\"$FLOTILLA_TRIAL_NUMBER\"\n\
         {extra}\n\
         echo \"evaluating x=$ARQON_x\"\n\
         awk -v x=\"$ARQON_x\" -v y=\"$FLOTILLA_PARAM_y\" 'BEGIN {{ printf \"RESULT=%.17g\\n\", (x-1)^2 + (y+2)^2 }}'\n",
        evals = dir.join("evals.txt").display()
    );
    std::fs::write(&path, body).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path.display().to_string()
}

fn config(dir: &Path, name: &str, budget: u64) -> String {
    let path = dir.join(name);
    let body = json!({"seed": 5, "budget": budget, "bounds": {
        "x": {"min": -5, "max": 5, "scale": "Linear"},
        "y": {"min": -5, "max": 5}}});
    std::fs::write(&path, body.to_string()).unwrap();
    path.display().to_string()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(flotilla_bin())
        .args(args)
        .env_remove("FLOTILLA_DATA_DIR")
        .current_dir(dir)
        .output()
        .expect("run flotilla")
}

/// `flotilla run` on `config` and `script` with `state.json` and `data` in `dir`.
fn run_with_state(dir: &Path, config: &str, script: &str) -> Output {
    run(
        dir,
        &[
            "run",
            "--config",
            config,
            "--script",
            script,
            "--state",
            "state.json",
            "--data-dir",
            "data",
        ],
    )
}

/// Runs flotilla, checks it succeeded and returns its stdout as JSON.
fn run_ok(dir: &Path, args: &[&str]) -> Value {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_json(&out)
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn evals(dir: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(dir.join("evals.txt")).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

fn quadratic(params: &Value) -> f64 {
    let x = params["x"].as_f64().unwrap();
    let y = params["y"].as_f64().unwrap();
    (x - 1.0).powi(2) + (y + 2.0).powi(2)
}

#[test]
fn a_parallel_run_finishes_the_budget_with_the_right_best() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = script(d, "sleep 0.1");
    let config = config(d, "quad.json", 12);
    let summary = run_ok(
        d,
        &[
            "run",
            "--config",
            &config,
            "--script",
            &script,
            "--parallel",
            "3",
            "--state",
            "state.json",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(summary["trials"]["completed"], 12, "{summary}");
    assert_eq!(summary["trials"]["failed"], 0, "{summary}");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["study"], "quad");
    let state: Value =
        serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap();
    let history = state["history"].as_array().unwrap();
    assert_eq!(history.len(), 12);
    assert_eq!(state["run_id"], summary["run_id"]);
    assert_eq!(state["config"]["budget"], 12);
    for h in history {
        let expected = quadratic(&h["params"]);
        assert!(
            (h["value"].as_f64().unwrap() - expected).abs() < 1e-9,
            "{h}"
        );
    }
    let best = history
        .iter()
        .map(|h| h["value"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(summary["best_value"].as_f64().unwrap(), best);
    assert!((quadratic(&summary["best_params"]) - best).abs() < 1e-9);
    let counts = evals(d);
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");

    // Again with the same state: nothing left to evaluate.
    let again = run_with_state(d, &config, &script);
    assert!(again.status.success());
    assert_eq!(stdout_json(&again)["trials"]["evaluated_by_this_run"], 0);
    assert_eq!(evals(d).values().sum::<usize>(), 12);

    // The study as `study show` sees it.
    let show = run(d, &["study", "show", "quad", "--data-dir", "data"]);
    assert!(show.status.success());
    let view = stdout_json(&show);
    assert_eq!(view["status"], "completed");
    assert_eq!(view["best"]["value"].as_f64().unwrap(), best);
}

#[test]
fn failing_and_timed_out_trials_fail_alone_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "case \"$n\" in\n\
                 2) echo boom >&2; exit 3;;\n\
                 3) sleep 30;;\n\
                 4) echo 'no number here'; exit 0;;\n\
                 esac";
    let script = script(d, extra);
    let config = config(d, "faulty.json", 8);
    let started = Instant::now();
    let out = run(
        d,
        &[
            "run",
            "--config",
            &config,
            "--script",
            &script,
            "--parallel",
            "2",
            "--timeout",
            "1s",
            "--state",
            "state.json",
            "--data-dir",
            "data",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout did not stop the sleep"
    );
    let summary = stdout_json(&out);
    assert_eq!(summary["trials"]["completed"], 5, "{summary}");
    assert_eq!(summary["trials"]["failed"], 3, "{summary}");
    assert_eq!(summary["trials"]["not_evaluated"], 0, "{summary}");
    // Failures are recorded in the log, so the study is complete.
    assert_eq!(summary["status"], "completed", "{summary}");
    assert!(
        stderr.contains("trial t2 failed: the script exited with status 3; stderr: boom"),
        "{stderr}"
    );
    assert!(
        stderr.contains("trial t3 failed: timed out after 1s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("trial t4 failed: the script printed no number"),
        "{stderr}"
    );
    let failed: BTreeSet<&str> = summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["trial_id"].as_str().unwrap())
        .collect();
    assert_eq!(failed, BTreeSet::from(["t2", "t3", "t4"]));
    assert!(summary["failed"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("exited with status 3"));
    let view = stdout_json(&run(d, &["study", "show", "faulty", "--data-dir", "data"]));
    assert_eq!(view["counts"]["failed"], 3, "{view}");
    assert_eq!(view["counts"]["pending"], 0, "{view}");
    assert_eq!(view["trials"][1]["state"], "failed", "{view}");
    // `flotilla run` stamps its asks: every trial carries a lease (ms).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let lease = view["trials"][0]["lease_until"].as_u64().expect("a lease");
    assert!(
        lease > now_ms && lease <= now_ms + 3_600_000,
        "{lease} vs {now_ms}"
    );
    assert_eq!(view["status"], "completed", "{view}");

    // Resuming with the state file evaluates none of the failed trials again.
    let again = run_with_state(d, &config, &script);
    assert!(again.status.success());
    assert_eq!(stdout_json(&again)["trials"]["evaluated_by_this_run"], 0);
    assert_eq!(evals(d).values().sum::<usize>(), 8);
    // And so does resuming without it: the failures are in the log.
    let summary = run_ok(
        d,
        &[
            "run",
            "--config",
            &config,
            "--script",
            &script,
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(summary["trials"]["evaluated_by_this_run"], 0, "{summary}");
    assert_eq!(summary["trials"]["failed"], 3, "{summary}");
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(evals(d).values().sum::<usize>(), 8);

    // A late result for a failed trial is recorded: tell one by hand,
    // ArqonHPO-style, and it becomes completed.
    let results = d.join("results.json");
    std::fs::write(
        &results,
        r#"[{"eval_id": 2, "params": {"x": 0, "y": 0}, "value": 0.25, "cost": 1}]"#,
    )
    .unwrap();
    let tell = run(
        d,
        &[
            "tell",
            "--study",
            "faulty",
            "--results",
            "results.json",
            "--data-dir",
            "data",
        ],
    );
    assert!(
        tell.status.success(),
        "{}",
        String::from_utf8_lossy(&tell.stderr)
    );
    assert_eq!(stdout_json(&tell)["result"]["told"], json!(["t2"]));
    std::fs::write(&results, r#"[{"trial_id": "t99", "value": 1}]"#).unwrap();
    let unknown = run(
        d,
        &[
            "tell",
            "--study",
            "faulty",
            "--results",
            "results.json",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("UNKNOWN_TRIAL"));
    std::fs::write(&results, r#"[{"trial_id": "t3"}]"#).unwrap();
    let missing = run(
        d,
        &[
            "tell",
            "--study",
            "faulty",
            "--results",
            "results.json",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing field `value`"));
    let ask = run(
        d,
        &["ask", "--study", "faulty", "--n", "2", "--data-dir", "data"],
    );
    assert!(ask.status.success());
    assert_eq!(stdout_json(&ask)["trials"], json!([]));
    assert_eq!(stdout_json(&ask)["done"], true);
    let view = stdout_json(&run(d, &["study", "show", "faulty", "--data-dir", "data"]));
    assert_eq!(view["best"]["trial_id"], "t2");
    assert_eq!(view["counts"]["told"], 6);
    assert_eq!(view["counts"]["failed"], 2);
    assert_eq!(view["trials"][1]["state"], "completed");
}

#[test]
fn sigkill_mid_study_then_resume_finishes_without_repeating_told_trials() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = script(d, "sleep 0.3");
    let config = config(d, "crash.json", 16);
    let args = [
        "run",
        "--config",
        &config,
        "--script",
        &script,
        "--parallel",
        "2",
        "--state",
        "state.json",
        "--data-dir",
        "data",
    ];
    let mut child = Command::new(flotilla_bin())
        .args(args)
        .env_remove("FLOTILLA_DATA_DIR")
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let told = std::fs::read(d.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map_or(0, |s| s["history"].as_array().map_or(0, Vec::len));
        if told >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // orphaned scripts finish

    let view = stdout_json(&run(d, &["study", "show", "crash", "--data-dir", "data"]));
    let left_running: BTreeSet<String> = view["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "asked")
        .map(|t| t["trial_id"].as_str().unwrap().to_string())
        .collect();
    assert!(view["counts"]["told"].as_u64().unwrap() >= 5);
    assert!(left_running.len() <= 2, "{left_running:?}");

    let out = run(d, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming study crash"), "{stderr}");
    let summary = stdout_json(&out);
    assert_eq!(summary["trials"]["completed"], 16, "{summary}");
    assert_eq!(summary["status"], "completed");
    let counts = evals(d);
    assert_eq!(counts.len(), 16, "{counts:?}");
    for (trial, n) in &counts {
        if left_running.contains(trial) {
            assert!(*n <= 2, "{trial} evaluated {n} times");
        } else {
            assert_eq!(
                *n, 1,
                "{trial} was told before the kill but evaluated {n} times"
            );
        }
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["history"].as_array().unwrap().len(), 16);
}

#[test]
fn config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = script(d, "");
    let cases = [
        (
            json!({"seed": 1, "bounds": {"x": {"min": 0, "max": 1}}}),
            "missing field `budget`",
        ),
        (
            json!({"seed": 1, "budget": 3, "bounds": {"x": {"min": 0, "max": 1}}, "batch_size": 4}),
            "unknown field `batch_size`",
        ),
        (
            json!({"seed": 1, "budget": 3, "bounds": {"x": {"min": 2, "max": 1}}}),
            "bounds.x: min 2 must be below max 1",
        ),
        (
            json!({"seed": 1, "budget": 3, "bounds": {"lr": {"min": 0, "max": 1, "scale": "Log"}}}),
            "bounds.lr: log scale needs min > 0, got 0",
        ),
        (
            json!({"seed": 1, "budget": 3, "bounds": {"x": {"min": 0, "max": 1, "scale": "cubic"}}}),
            "bounds.x.scale: unknown scale \"cubic\"",
        ),
        (
            json!({"seed": 1, "budget": 3, "bounds": {}}),
            "bounds: at least one parameter",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = d.join(format!("bad{i}.json"));
        std::fs::write(&path, body.to_string()).unwrap();
        let out = run(
            d,
            &[
                "run",
                "--config",
                path.to_str().unwrap(),
                "--script",
                &script,
                "--data-dir",
                "data",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {stderr}");
        assert!(stderr.contains(expected), "{body}: {stderr}");
    }
    let missing = run(
        d,
        &[
            "run",
            "--config",
            "nope.json",
            "--script",
            &script,
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("config nope.json: cannot read"));
    assert!(evals(d).is_empty(), "a bad config evaluated something");
}

/// Re-decides every recorded `ask` on the state folded from the events
/// before it and returns how many trials matched their recorded ones bit
/// for bit (the test fails on the first ask that does not).
fn redecide_asks(events: &[SolverEvent]) -> usize {
    let mut study = Study::default();
    let mut asks = 0;
    for event in events {
        if let SolverEvent::TrialsAsked {
            trials,
            retried,
            lease_until,
            ..
        } = event
        {
            let n = (trials.len() + retried.len()).max(1) as u32;
            let lease = lease_until.map(|until| Lease {
                now: until - DEFAULT_LEASE_SECONDS * 1000,
                seconds: None,
            });
            let again = study.decide(&SolverCommand::Ask { n, lease }).unwrap();
            let bits = |e: &SolverEvent| serde_json::to_string(e).unwrap();
            assert_eq!(bits(&again[0]), bits(event), "an ask differs on replay");
            asks += trials.len();
        }
        study = study.evolve(event);
    }
    asks
}

#[test]
fn parallel_model_based_studies_with_out_of_order_tells_replay_to_identical_trials() {
    // Every sampler that reads the history (auto runs GP at this shape).
    for sampler in ["tpe", "cmaes", "gp", "auto"] {
        parallel_study_replays_to_identical_trials(sampler);
    }
}

/// Runs a study of `sampler` four trials at a time with results coming
/// back out of order, then re-decides every ask from the log.
fn parallel_study_replays_to_identical_trials(sampler: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Trials take 0 to 0.35 s depending on their number, so with four at a
    // time the results come back out of order.
    let script = script(d, "sleep \"0.$(( (n * 7) % 8 ))\"");
    let config = d.join("study.json");
    let body = json!({"seed": 11, "budget": 24, "sampler": sampler,
        "strategy_params": {"n_startup_trials": 4},
        "bounds": {"x": {"min": -5, "max": 5}, "y": {"min": -5, "max": 5}}});
    std::fs::write(&config, body.to_string()).unwrap();
    let config = config.display().to_string();
    let args = [
        "run",
        "--config",
        &config,
        "--script",
        &script,
        "--parallel",
        "4",
        "--data-dir",
        "data",
    ];
    assert_eq!(run_ok(d, &args)["trials"]["completed"], 24, "{sampler}");

    let log = run(
        d,
        &["events", "--data-dir", "data", "--stream", "solver/study"],
    );
    assert!(
        log.status.success(),
        "{sampler}: {}",
        String::from_utf8_lossy(&log.stderr)
    );
    let events: Vec<SolverEvent> = String::from_utf8(log.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let envelope: Value = serde_json::from_str(line).unwrap();
            serde_json::from_value(envelope["payload"].clone()).unwrap()
        })
        .collect();
    let told: Vec<u64> = events
        .iter()
        .flat_map(|e| match e {
            SolverEvent::TrialsTold { results, .. } => results
                .iter()
                .map(|r| trial_number(&r.trial_id).unwrap())
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(
        told.windows(2).any(|w| w[0] > w[1]),
        "{sampler}: tells came in order: {told:?}"
    );
    assert!(redecide_asks(&events) >= 24, "{sampler}");
}

#[test]
fn scripts_get_int_categorical_and_conditional_values_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("eval.sh");
    // Scores sgd with a momentum best, and records what the script saw.
    let body = format!(
        "#!/bin/sh\n\
         echo \"$ARQON_layers $ARQON_opt ${{ARQON_momentum:-none}}\" >> \"{seen}\"\n\
         if [ \"$ARQON_opt\" = sgd ]; then echo \"RESULT=$ARQON_momentum\"; else echo \"RESULT=$ARQON_layers\"; fi\n",
        seen = d.join("seen.txt").display()
    );
    std::fs::write(&path, body).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    let config = d.join("mixed.json");
    let body = json!({"seed": 3, "budget": 12, "direction": "maximize", "params": {
        "layers": {"type": "int", "min": 1, "max": 4},
        "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
        "momentum": {"min": 0.5, "max": 0.9, "condition": {"parent": "opt", "values": ["sgd"]}}}});
    std::fs::write(&config, body.to_string()).unwrap();
    let args = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--script",
        path.to_str().unwrap(),
        "--data-dir",
        "data",
    ];
    let summary = run_ok(d, &args);
    assert_eq!(summary["trials"]["completed"], 12, "{summary}");
    let seen = std::fs::read_to_string(d.join("seen.txt")).unwrap();
    for line in seen.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let layers: i64 = fields[0]
            .parse()
            .unwrap_or_else(|_| panic!("not an int: {line}"));
        assert!((1..=4).contains(&layers), "{line}");
        match fields[1] {
            "adam" => assert_eq!(fields[2], "none", "{line}"),
            "sgd" => assert!(
                (0.5..=0.9).contains(&fields[2].parse::<f64>().unwrap()),
                "{line}"
            ),
            other => panic!("not a choice: {other}"),
        }
    }
    // Maximising: the best is the highest value any trial got.
    let best = summary["best_value"].as_f64().unwrap();
    assert!(best >= 1.0, "{summary}");
}
