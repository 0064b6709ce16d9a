//! `flotilla run --executor local`: a study whose trials are scheduler
//! jobs — 200 trials with `--parallel 4` finish with 200 results, never
//! more than 4 at once; bad scripts fail their trials with clear reasons.

use crate::support::{flotilla, flotilla_bin, json_lines};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `flotilla run` on `dir/data` (with `extra` naming the executor), not
/// started yet.
fn run_command(dir: &Path, config: &str, script: &str, extra: &[&str]) -> Command {
    let data = dir.join("data").display().to_string();
    let mut command = Command::new(flotilla_bin());
    command
        .args(["run", "--config", config, "--script", script])
        .args(["--data-dir", &data])
        .args(extra)
        .env_remove("FLOTILLA_DATA_DIR");
    command
}

/// `flotilla run --executor local <extra>` to its end.
fn run(dir: &Path, config: &str, script: &str, extra: &[&str]) -> (std::process::Output, Value) {
    let out = run_command(dir, config, script, extra)
        .args(["--executor", "local"])
        .output()
        .unwrap();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, summary)
}

/// A study config `dir/<name>.json` over `x` in [0, 1].
fn study(dir: &Path, name: &str, seed: u64, budget: u64) -> String {
    let text = format!(
        r#"{{"seed": {seed}, "budget": {budget}, "bounds": {{"x": {{"min": 0, "max": 1}}}}}}"#
    );
    write(dir, &format!("{name}.json"), &text)
}

/// The most intervals open at once.
fn max_overlap(log: &str) -> usize {
    let mut marks: Vec<(u128, i32)> = log
        .lines()
        .map(|l| {
            let (kind, at) = l.split_once(' ').unwrap();
            (
                at.trim().parse().unwrap(),
                if kind == "start" { 1 } else { -1 },
            )
        })
        .collect();
    // An end and a start at the same instant: the end first.
    marks.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, delta) in marks {
        open += delta;
        most = most.max(open);
    }
    most as usize
}

#[test]
fn a_200_trial_study_through_the_scheduler_finishes_with_200_results_and_heartbeats_renew_leases() {
    let dir = tempfile::tempdir().unwrap();
    let config = study(dir.path(), "quad", 11, 200);
    let log = dir.path().join("overlap.log");
    let script = write(
        dir.path(),
        "objective.sh",
        &format!(
            "#!/bin/sh\necho \"start $(date +%s%N)\" >> {log}\n\
             awk -v x=\"$ARQON_x\" 'BEGIN {{ printf \"RESULT=%.17g\\n\", (x - 0.3) * (x - 0.3) }}'\n\
             echo \"end $(date +%s%N)\" >> {log}\n",
            log = log.display()
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (out, summary) = run(dir.path(), &config, &script, &["--parallel", "4"]);
    let slow = write(dir.path(), "slow.sh", "sleep 1.5; echo RESULT=$ARQON_x");
    let slow_config = study(dir.path(), "slow", 3, 2);
    let beats = run_command(dir.path(), &slow_config, &slow, &["--executor", "local"])
        .env("FLOTILLA_HEARTBEAT_SECONDS", "0.3")
        .output()
        .unwrap();
    assert!(
        beats.status.success(),
        "{}",
        String::from_utf8_lossy(&beats.stderr)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary["status"], "completed", "{summary:#}");
    assert_eq!(summary["trials"]["completed"], 200, "{summary:#}");
    assert_eq!(summary["trials"]["failed"], 0);
    let best = summary["best_value"].as_f64().unwrap();
    assert!(best < 1e-3, "best {best}");
    let overlap = max_overlap(&std::fs::read_to_string(&log).unwrap());
    assert!((1..=4).contains(&overlap), "{overlap} jobs ran at once");
    // The log: 200 jobs succeeded once each, 200 results told, and the
    // leases of running trials renewed by heartbeats.
    let data = dir.path().join("data").display().to_string();
    let events = |stream: &str| {
        let out = flotilla(&["events", "--data-dir", &data, "--stream", stream]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    };
    let jobs = events("scheduler/quad");
    let succeeded = jobs.iter().filter(|e| e["type"] == "job_succeeded").count();
    assert_eq!(succeeded, 200);
    let study = events("solver/quad");
    let told: usize = study
        .iter()
        .filter(|e| e["type"] == "trials_told")
        .map(|e| e["payload"]["results"].as_array().unwrap().len())
        .sum();
    assert_eq!(told, 200);
    // Quick trials end before a heartbeat is due; slow ones are renewed.
    assert!(!study.iter().any(|e| e["type"] == "leases_renewed"));
    let slow_study = events("solver/slow");
    assert!(slow_study.iter().any(|e| e["type"] == "leases_renewed"));
    // The best value the run printed is the study's best.
    let show = flotilla(&["study", "show", "quad", "--data-dir", &data]);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["best"]["value"].as_f64(), Some(best), "{shown:#}");
}

#[test]
fn bad_scripts_fail_their_trials_with_clear_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let config = study(dir.path(), "small", 1, 2);
    let cases = [
        ("./no-such-script.sh", vec![], "not found"),
        ("echo hello world", vec![], "printed no number"),
        (
            "sleep 5",
            vec!["--timeout", "300ms"],
            "timed out after 0.3 s",
        ),
        (
            "echo boom >&2; exit 4",
            vec![],
            "exited with status 4; stderr: boom",
        ),
    ];
    for (i, (script, extra, reason)) in cases.iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let (out, summary) = run(&case, &config, script, extra);
        assert!(!out.status.success(), "case {i}: {summary:#}");
        assert_eq!(summary["trials"]["failed"], 2, "case {i}: {summary:#}");
        let first = summary["failed"][0]["reason"].as_str().unwrap_or_default();
        assert!(first.contains(reason), "case {i}: {first}");
    }
}

#[test]
fn the_kubernetes_executor_needs_an_image_and_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = study(dir.path(), "k", 1, 2);
    let kubernetes = |extra: &[&str]| {
        let mut flags = vec!["--executor", "kubernetes"];
        flags.extend_from_slice(extra);
        let mut command = run_command(dir.path(), &config, "python train.py", &flags);
        command
            .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
            .env("HOME", dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST");
        command.output().unwrap()
    };
    let out = kubernetes(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --image"));
    let out = kubernetes(&["--image", "trainer:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Kubernetes cluster configured"), "{err}");
}

#[test]
fn a_killed_run_resumes_adopting_its_jobs_and_tells_each_trial_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = study(dir.path(), "resume", 5, 12);
    let starts = dir.path().join("starts.log");
    let script = format!(
        "echo \"$FLOTILLA_TRIAL_ID\" >> {}; sleep 1; echo RESULT=$ARQON_x",
        starts.display()
    );
    let flags = ["--parallel", "3", "--executor", "local"];
    let mut first = run_command(dir.path(), &config, &script, &flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while its second wave of jobs runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&starts)
        .unwrap_or_default()
        .lines()
        .count()
        < 4
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not start jobs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let (out, summary) = run(dir.path(), &config, &script, &["--parallel", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary["trials"]["completed"], 12, "{summary:#}");
    // Adopted jobs were not started again: each trial ran once.
    let text = std::fs::read_to_string(&starts).unwrap();
    let mut ids: Vec<&str> = text.lines().collect();
    ids.sort();
    let total = ids.len();
    ids.dedup();
    assert_eq!((ids.len(), total), (12, 12), "{text}");
}
