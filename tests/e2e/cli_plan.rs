//! `flotilla plan`: D29's manifests (golden files and the D29 guide's
//! example), D28's split, every written manifest validated by
//! `kubernetes-validate --strict`, bad configs refused naming the field,
//! and `--execute local` running the plan through the scheduler.

use crate::support::{flotilla, json_lines, FlotillaUp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/golden/d29");
const CREATED_AT: &str = "2025-11-16T18:21:45.906585";

/// `kubernetes-validate` (see [`crate::support::tool`]): the manifests
/// must be checked against the real schemas.
fn kubernetes_validate() -> PathBuf {
    crate::support::tool("KUBERNETES_VALIDATE_BIN", "kubernetes-validate")
}

/// Runs `kubernetes-validate --strict` on every YAML file in `dir`.
fn validate_all(dir: &Path) {
    let files = yaml_files(dir);
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let out = Command::new(kubernetes_validate())
        .arg("--strict")
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{text}"
    );
    assert_eq!(text.matches("passed").count(), files.len(), "{text}");
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn k8s_config(session: &str, total: u32, workers: u32, extra: &str) -> String {
    format!(
        "session_id: \"{session}\"\nk8s_namespace: trading-bots\nimage: arbitrage-lite:latest\n\
         mode: paper\nenv: docker\ntotal_iterations: {total}\nworkers: {workers}\n\
         optimizer: bayesian\n{extra}"
    )
}

fn plan(orch: &str, k8s: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let out_arg = out.display().to_string();
    let mut args = vec![
        "plan",
        "--orchestrator-config",
        orch,
        "--k8s-config",
        k8s,
        "--output-dir",
        &out_arg,
        "--created-at",
        CREATED_AT,
    ];
    args.extend_from_slice(extra);
    flotilla(&args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_d29_example_matches_its_golden_files_and_the_guide_and_validates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let out = plan(
        &format!("{root}/deploy/d29/orchestrator.yaml"),
        &format!("{root}/deploy/d29/k8s.yaml"),
        dir.path(),
        &["--strict"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = yaml_files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "job-00-arb-tuning-d29-k8s--worker-1-0.yaml",
            "job-01-arb-tuning-d29-k8s--worker-2-1.yaml"
        ]
    );
    for name in &names {
        let ours = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let golden = std::fs::read_to_string(Path::new(GOLDEN).join(name)).unwrap();
        assert_eq!(ours, golden, "{name} differs from its golden file");
    }
    // The same Job, field for field, as the D29 guide prints it.
    let ours: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.path().join(&names[0])).unwrap())
            .unwrap();
    let guide: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(GOLDEN).join("seed-example.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(ours, guide);
    validate_all(dir.path());
}

#[test]
fn ten_iterations_over_three_workers_split_four_three_three() {
    let dir = tempfile::tempdir().unwrap();
    let orch = write(dir.path(), "o.yaml", "total_iterations: 10\nworkers: 3\n");
    let k8s = write(dir.path(), "k.yaml", &k8s_config("abcdefghijkl", 1, 1, ""));
    let out_dir = dir.path().join("out");
    let out = plan(&orch, &k8s, &out_dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut split = Vec::new();
    for (index, path) in yaml_files(&out_dir).iter().enumerate() {
        let worker = format!("worker-{}", index + 1);
        let name = format!("arb-tuning-abcdefgh-{worker}-{index}");
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            format!("job-{index:02}-{name}.yaml")
        );
        let job: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(job["metadata"]["name"], name.as_str());
        let args = job["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .clone();
        let at = args.iter().position(|a| a == "--iterations").unwrap();
        split.push(args[at + 1].as_str().unwrap().to_string());
    }
    assert_eq!(split, ["4", "3", "3"]);
    validate_all(&out_dir);
}

#[test]
fn bad_configs_are_refused_naming_the_field_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let orch = write(dir.path(), "o.yaml", "workers: 2\n");
    let cases = [
        (
            k8s_config("s", 4, 2, "resources:\n  limits:\n    cpu: 1zz\n"),
            &[][..],
            "resources.limits.cpu: \"1zz\" is not a Kubernetes quantity",
        ),
        (
            k8s_config("s", 4, 2, "image_tag: x\n"),
            &[][..],
            "unknown field `image_tag`",
        ),
        (
            k8s_config("s", 4, 2, "").replace("workers: 2", "workers: 0"),
            &[][..],
            "workers: must be at least 1, got 0",
        ),
        (
            k8s_config("Bad_Session", 4, 2, ""),
            &["--strict"][..],
            "is not a valid Kubernetes name",
        ),
        (
            k8s_config("s", 1, 2, ""),
            &["--strict"][..],
            "leaves jobs with zero iterations",
        ),
    ];
    for (i, (config, flags, expected)) in cases.iter().enumerate() {
        // The zero-workers case must come from the orchestrator config too.
        let orch = if expected.contains("workers: must") {
            write(dir.path(), "o0.yaml", "workers: 0\n")
        } else {
            orch.clone()
        };
        let k8s = write(dir.path(), &format!("k{i}.yaml"), config);
        let out_dir = dir.path().join(format!("out{i}"));
        let out = plan(&orch, &k8s, &out_dir, flags);
        assert!(!out.status.success(), "case {i} passed");
        assert!(
            stderr(&out).contains(expected),
            "case {i}: {}",
            stderr(&out)
        );
        assert!(
            !out_dir.exists() || yaml_files(&out_dir).is_empty(),
            "case {i} wrote files"
        );
    }
    // Without --strict, D29's silent problems are warnings and the files
    // are written as D29 would.
    let k8s = write(dir.path(), "lax.yaml", &k8s_config("Bad_Session", 4, 2, ""));
    let out = plan(&orch, &k8s, &dir.path().join("lax"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning:"), "{}", stderr(&out));
}

#[test]
fn execute_local_runs_the_plan_through_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for D28's Python: records its worker and arguments.
    let python = write(
        dir.path(),
        "fake-python",
        "#!/bin/sh\necho \"$WORKER_ID $SESSION_ID $MODE $REDIS_PORT $*\" >> \"$RECORD\"\n",
    );
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let record = dir.path().join("record.txt");
    let orch = write(dir.path(), "o.yaml", "total_iterations: 5\nworkers: 2\n");
    let extra = format!("extra_env:\n  RECORD: \"{}\"\n", record.display());
    let k8s = write(
        dir.path(),
        "k.yaml",
        &k8s_config("local-session", 1, 1, &extra),
    );
    let data = dir.path().join("data").display().to_string();
    let out = plan(
        &orch,
        &k8s,
        &dir.path().join("out"),
        &[
            "--execute",
            "local",
            "--python",
            &python,
            "--data-dir",
            &data,
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let mut lines: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("worker-1 local-session paper 6379 scripts/run_d24_tuning_session.py")
    );
    assert!(lines[0].contains("--iterations 3"), "{}", lines[0]);
    assert!(lines[1].contains("--iterations 2"), "{}", lines[1]);
    // The jobs are in the log.
    let events = flotilla(&[
        "events",
        "--data-dir",
        &data,
        "--stream",
        "scheduler/plan-local-session",
    ]);
    let types: Vec<String> = json_lines(&events.stdout)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "job_succeeded").count(),
        2,
        "{types:?}"
    );
}

/// The scheduler's `manifests` executor writes the Job the `kubernetes`
/// executor would create: it must pass the same schema check.
#[test]
fn the_schedulers_job_manifests_validate_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let up = FlotillaUp::start(
        &["--only", "scheduler", "--data-dir", &data_arg],
        dir.path(),
    );
    let configure = serde_json::json!({"type": "configure_queue", "concurrency": 2,
        "executor": "manifests", "pool": "a100"});
    let (status, reply) = up.send("scheduler", "lr-search", &configure);
    assert_eq!(status, 200, "{reply}");
    let spec = serde_json::json!({
        "command": ["python", "train.py"], "study": "lr-search", "trial_id": "t1",
        "params": {"lr": 0.01, "act": "relu"}, "env": {"EPOCHS": "3"}, "timeout_seconds": 600,
        "workdir": "/work",
        "kubernetes": {"image": "trainer:1", "namespace": "tuning", "gpus": 1,
            "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"},
            "node_selector": {"flotilla.dev/pool": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "ttl_seconds_after_finished": 3600}});
    let (status, reply) = up.send(
        "scheduler",
        "lr-search",
        &serde_json::json!({"type": "submit", "job_id": "t1", "spec": spec}),
    );
    assert_eq!(status, 200, "{reply}");
    let manifests = data.join("jobs/manifests/lr-search");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while yaml_files(&manifests).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no manifest written");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    validate_all(&manifests);
    // A bad quantity is refused when the job is submitted, naming the field.
    let mut bad = spec.clone();
    bad["kubernetes"]["limits"]["cpu"] = serde_json::json!("1zz");
    let (status, reply) = up.send(
        "scheduler",
        "lr-search",
        &serde_json::json!({"type": "submit", "job_id": "t2", "spec": bad}),
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "INVALID_FIELD");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.kubernetes.limits.cpu:"),
        "{message}"
    );
}
