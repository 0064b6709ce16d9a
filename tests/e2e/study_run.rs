//! Study runs in the control plane: a study created with a `runner`
//! section runs by itself; a run with a pruner has each job report its
//! intermediate value to the study over HTTP, and a `prune` answer makes
//! the run cancel that job and count the trial as pruned, while the run
//! still ends with exactly the budget's results.

use crate::support::{wait_until, FlotillaUp};
use serde_json::{json, Value};
use std::time::Duration;

/// Reports step 1 (the trial's loss) to the study; if the pruner says go
/// on, prints the loss as the result, else waits to be cancelled.
const SCRIPT: &str = r#"#!/bin/sh
loss=$(awk -v x="$ARQON_x" 'BEGIN { printf "%f", (x - 2) * (x - 2) }')
body="{\"type\": \"report\", \"trial_id\": \"$FLOTILLA_TRIAL_ID\", \"step\": 1, \"value\": $loss}"
answer=$(curl -s -X POST -H 'Content-Type: application/json' -d "$body" "$FLOTILLA_GATEWAY/v1/cmd/solver/$FLOTILLA_STUDY")
case "$answer" in
  *'"action":"prune"'*) sleep 60 ;;
esac
echo "RESULT=$loss"
"#;

fn run_view(up: &FlotillaUp, study: &str) -> Value {
    let (status, body) = up.get(&format!("/v1/query/study_run/{study}"));
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

#[test]
fn pruned_trials_have_their_jobs_cancelled_and_the_budget_is_met() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("report.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let up = FlotillaUp::start_with_env(
        &["--data-dir", data.to_str().unwrap()],
        &[("FLOTILLA_RECONCILE_SECONDS", "1".as_ref())],
        dir.path(),
    );
    let create = json!({"type": "create_study", "seed": 3, "budget": 10, "sampler": "random",
        "bounds": {"x": {"min": -10.0, "max": 10.0}},
        "pruner": {"type": "median", "n_startup_trials": 2}});
    let (status, reply) = up.send("solver", "pruned", &create);
    assert_eq!(status, 200, "{reply}");
    let start = json!({"type": "start_run", "command": [script.to_str().unwrap()], "parallel": 1,
        "env": {"FLOTILLA_GATEWAY": up.url}});
    let (status, reply) = up.send("study_run", "pruned", &start);
    assert_eq!(status, 200, "{reply}");

    let view = wait_until(Duration::from_secs(120), || {
        let view = run_view(&up, "pruned");
        (view["status"] == "finished").then_some(view)
    })
    .unwrap_or_else(|| {
        panic!(
            "the run did not finish: {}\n{}",
            run_view(&up, "pruned"),
            up.log()
        )
    });
    let counts = &view["counts"];
    let pruned = counts["pruned"].as_u64().unwrap();
    assert!(pruned > 0, "nothing was pruned: {view}");
    assert_eq!(
        counts["completed"].as_u64().unwrap() + pruned + counts["failed"].as_u64().unwrap(),
        10,
        "{view}"
    );
    let (_, study) = up.get("/v1/query/solver/pruned");
    assert_eq!(study["result"]["counts"]["pruned"], pruned, "{study}");
    assert_eq!(study["result"]["status"], "completed", "{study}");
    // Each pruned trial's job was cancelled, not left to time out.
    let queue = crate::support::queue(&up, "pruned");
    for trial in view["trials"].as_array().unwrap() {
        if trial["state"] == "pruned" {
            let job = queue["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["job_id"] == trial["job_id"])
                .expect("the pruned trial's job");
            assert_eq!(job["status"], "cancelled", "{job}");
        }
    }
}

/// Writes an executable script `name` in `dir` and returns its path.
pub(crate) fn write_script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let script = dir.join(name);
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_study_created_with_a_runner_runs_by_itself_and_bad_runners_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        "eval.sh",
        "#!/bin/sh\nawk -v x=\"$ARQON_x\" 'BEGIN { printf \"RESULT=%f\\n\", x * x }'\n",
    );
    let data = dir.path().join("data");
    let up = FlotillaUp::start(&["--data-dir", data.to_str().unwrap()], dir.path());
    let bad = json!({"type": "create_study", "seed": 1, "budget": 6,
        "bounds": {"x": {"min": -1.0, "max": 1.0}},
        "runner": {"command": [script.to_str().unwrap()], "parallel": 0}});
    let (status, reply) = up.send("solver", "self", &bad);
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("runner.parallel"),
        "{reply}"
    );
    let good = json!({"type": "create_study", "seed": 1, "budget": 6,
        "bounds": {"x": {"min": -1.0, "max": 1.0}},
        "runner": {"command": [script.to_str().unwrap()], "parallel": 3}});
    let (status, reply) = up.send("solver", "self", &good);
    assert_eq!(status, 200, "{reply}");
    let view = wait_until(Duration::from_secs(60), || {
        let (status, body) = up.get("/v1/query/study_run/self");
        (status == 200 && body["result"]["status"] == "finished").then(|| body["result"].clone())
    })
    .unwrap_or_else(|| panic!("the runner did not finish the study:\n{}", up.log()));
    assert_eq!(view["counts"]["completed"], 6, "{view}");
    assert_eq!(view["spec"]["parallel"], 3, "{view}");
}

#[test]
fn a_runner_section_nobody_heard_starts_its_run_when_the_runs_recover() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        "eval.sh",
        "#!/bin/sh\nawk -v x=\"$ARQON_x\" 'BEGIN { printf \"RESULT=%f\\n\", x * x }'\n",
    );
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    // No study runs hosted: the study is created and nobody starts its run.
    let mut up = FlotillaUp::start(&["--data-dir", data_arg, "--only", "solver"], dir.path());
    let create = json!({"type": "create_study", "seed": 1, "budget": 4,
        "bounds": {"x": {"min": -1.0, "max": 1.0}},
        "runner": {"command": [script.to_str().unwrap()], "parallel": 2}});
    let (status, reply) = up.send("solver", "late", &create);
    assert_eq!(status, 200, "{reply}");
    up.terminate();
    drop(up);
    let up = FlotillaUp::start(&["--data-dir", data_arg], dir.path());
    let view = wait_until(Duration::from_secs(60), || {
        let (status, body) = up.get("/v1/query/study_run/late");
        (status == 200 && body["result"]["status"] == "finished").then(|| body["result"].clone())
    })
    .unwrap_or_else(|| panic!("the missed runner never ran:\n{}", up.log()));
    assert_eq!(view["counts"]["completed"], 4, "{view}");
}
