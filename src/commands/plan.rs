//! `flotilla plan`: the D28/D29 tuning orchestrator's plan, as Kubernetes
//! Job manifests (D29) or as local subprocesses (D28, `--execute local`).
//!
//! The plan is D29's, to the byte: `total_iterations` (and `workers`) from
//! the orchestrator config when it has them, else from the k8s config; each
//! of the `workers` workers (`worker-1`, `worker-2`, ...) gets
//! `total_iterations / workers` iterations and the first `total_iterations
//! % workers` one more (10 over 3 → 4, 3, 3); job `i` (from 0) of worker `w`
//! is named `arb-tuning-{first 8 characters of session_id}-{w}-{i}` and
//! written to `job-{i:02}-{name}.yaml` the way PyYAML's `yaml.dump` writes
//! it (sorted keys, the same quoting and indentation). The one difference
//! from D29's bytes: D29 passes the same labels dict twice, so PyYAML
//! writes it once with an anchor (`&id001`) and then an alias (`*id001`);
//! Flotilla writes the labels out both times (the same document once read). Labels, annotations (`created_at` is the local time,
//! or `--created-at`), environment (`APP_ENV`, `REDIS_HOST`, `REDIS_PORT`,
//! `SESSION_ID`, `WORKER_ID`, `MODE`, then `extra_env` over them), command,
//! args and resources are D29's.
//!
//! Flotilla refuses what could never be applied: a resource quantity the
//! API server would not parse, zero workers, fields the config does not
//! know. `--strict` adds what D29 lacks: object names valid for
//! Kubernetes (DNS-1123 labels of at most 63 characters), valid label
//! values, and no job with zero iterations; without it those are warnings.

use crate::cli::PlanArgs;
use crate::commands::scheduler::{base_executors, EmbeddedScheduler};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_messages::scheduler::{check_dns1123_label, check_quantity};
use flotilla_scheduler::to_yaml;
use flotilla_scheduler::AllowedCommands;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// D29's k8s config: `K8sOrchestratorConfig(**data)`, so every field it
/// does not know is an error, and the ones without a default are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sConfig {
    /// The tuning session.
    pub session_id: String,
    /// Where the Jobs go.
    pub k8s_namespace: String,
    /// The container image.
    pub image: String,
    /// paper, shadow or live.
    pub mode: String,
    /// docker, local, stage or prod.
    pub env: String,
    /// Iterations in all (the orchestrator config's wins).
    pub total_iterations: i64,
    /// Workers (the orchestrator config's wins).
    pub workers: i64,
    /// grid, random or bayesian.
    pub optimizer: String,
    /// The tuning config the workers read.
    #[serde(default = "default_config_path")]
    pub config_path: String,
    /// Environment variables over D29's own.
    #[serde(default)]
    pub extra_env: Option<BTreeMap<String, serde_yaml::Value>>,
    /// Requests and limits, copied to the container.
    #[serde(default)]
    pub resources: Option<BTreeMap<String, serde_yaml::Value>>,
}

fn default_config_path() -> String {
    "configs/d23_tuning/advanced_baseline.yaml".into()
}

/// One job of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// Its Job name.
    pub name: String,
    /// `worker-<n>`.
    pub worker_id: String,
    /// Its iterations.
    pub iterations: i64,
    /// The manifest.
    pub manifest: Value,
}

/// D28's `plan_jobs`: iterations per worker, the remainder to the first ones.
pub fn split_iterations(total: i64, workers: i64) -> Vec<i64> {
    let (each, rest) = (total.div_euclid(workers), total.rem_euclid(workers));
    (0..workers).map(|i| each + i64::from(i < rest)).collect()
}

fn read_yaml(label: &str, path: &Path) -> Result<serde_yaml::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{label} {}: cannot read", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| anyhow!("{label} {}: {e}", path.display()))
}

/// Reads the two configs; the orchestrator config may override the
/// iterations and workers.
pub fn load_configs(orchestrator: &Path, k8s: &Path) -> Result<K8sConfig> {
    let orch = read_yaml("orchestrator-config", orchestrator)?;
    let k8s_value = read_yaml("k8s-config", k8s)?;
    let shown = k8s.display();
    let mut config: K8sConfig = serde_path_to_error::deserialize(k8s_value).map_err(|e| {
        let path = e.path().to_string();
        anyhow!("k8s-config {shown}: {path}: {}", e.into_inner())
    })?;
    for (field, slot) in [
        ("total_iterations", &mut config.total_iterations),
        ("workers", &mut config.workers),
    ] {
        match orch.get(field) {
            None | Some(serde_yaml::Value::Null) => {}
            Some(v) => {
                *slot = v.as_i64().ok_or_else(|| {
                    anyhow!(
                        "orchestrator-config {}: {field} must be a whole number, got {v:?}",
                        orchestrator.display()
                    )
                })?
            }
        }
    }
    Ok(config)
}

/// A YAML scalar as a manifest value: strings stay strings, numbers stay
/// numbers (as D29 copies them).
fn scalar(field: &str, v: &serde_yaml::Value) -> Result<Value> {
    match v {
        serde_yaml::Value::String(s) => Ok(json!(s)),
        serde_yaml::Value::Number(n) => {
            serde_json::to_value(n).map_err(|e| anyhow!("{field}: {e}"))
        }
        serde_yaml::Value::Bool(b) => Ok(json!(b)),
        other => bail!("{field}: expected a string or number, got {other:?}"),
    }
}

/// An env value as Kubernetes needs it: a string.
fn env_text(field: &str, v: &serde_yaml::Value) -> Result<String> {
    Ok(match scalar(field, v)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

/// D29's resources, with every quantity checked.
fn resources(config: &K8sConfig) -> Result<Option<Value>> {
    let Some(given) = &config.resources else {
        return Ok(None);
    };
    let mut out = Map::new();
    for (section, quantities) in given {
        if section != "requests" && section != "limits" {
            bail!("resources.{section}: unknown section (expected requests or limits)");
        }
        let serde_yaml::Value::Mapping(map) = quantities else {
            bail!("resources.{section}: expected a map of resource name to quantity");
        };
        let mut checked = Map::new();
        for (name, quantity) in map {
            let name = name
                .as_str()
                .ok_or_else(|| anyhow!("resources.{section}: resource names must be strings"))?;
            let field = format!("resources.{section}.{name}");
            let value = scalar(&field, quantity)?;
            let text = match &value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            check_quantity(&field, &text).map_err(|e| anyhow!(e))?;
            checked.insert(name.to_string(), value);
        }
        out.insert(section.clone(), Value::Object(checked));
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// D29's environment: its own variables, then `extra_env` over them (a
/// key given again keeps its place, as a Python dict update does).
fn environment(config: &K8sConfig, worker_id: &str) -> Result<Vec<Value>> {
    let mut env: Vec<(String, String)> = vec![
        ("APP_ENV".into(), config.env.clone()),
        ("REDIS_HOST".into(), "arbitrage-redis".into()),
        ("REDIS_PORT".into(), "6379".into()),
        ("SESSION_ID".into(), config.session_id.clone()),
        ("WORKER_ID".into(), worker_id.into()),
        ("MODE".into(), config.mode.clone()),
    ];
    for (key, value) in config.extra_env.iter().flatten() {
        let text = env_text(&format!("extra_env.{key}"), value)?;
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = text,
            None => env.push((key.clone(), text)),
        }
    }
    Ok(env
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect())
}

/// Builds the plan; `strict` turns D29's silent problems into errors,
/// otherwise they come back as warnings.
pub fn build_plan(
    config: &K8sConfig,
    created_at: &str,
    strict: bool,
) -> Result<(Vec<PlannedJob>, Vec<String>)> {
    if config.workers < 1 {
        bail!("workers: must be at least 1, got {}", config.workers);
    }
    if config.total_iterations < 0 {
        bail!(
            "total_iterations: must not be negative, got {}",
            config.total_iterations
        );
    }
    let resources = resources(config)?;
    let mut problems = Vec::new();
    if config.total_iterations < config.workers {
        problems.push(format!(
            "total_iterations: {} over {} workers leaves jobs with zero iterations",
            config.total_iterations, config.workers
        ));
    }
    problems.extend(check_dns1123_label("k8s_namespace", &config.k8s_namespace).err());
    for (field, value) in [
        ("session_id", &config.session_id),
        ("mode", &config.mode),
        ("env", &config.env),
    ] {
        problems.extend(check_label_value(field, value).err());
    }
    let session_short: String = config.session_id.chars().take(8).collect();
    let mut jobs = Vec::new();
    for (index, iterations) in split_iterations(config.total_iterations, config.workers)
        .into_iter()
        .enumerate()
    {
        let worker_id = format!("worker-{}", index + 1);
        let name = format!("arb-tuning-{session_short}-{worker_id}-{index}");
        problems.extend(check_dns1123_label("job name", &name).err());
        let manifest = manifest(
            config, &name, &worker_id, iterations, created_at, &resources,
        )?;
        jobs.push(PlannedJob {
            name,
            worker_id,
            iterations,
            manifest,
        });
    }
    if strict && !problems.is_empty() {
        bail!("--strict: {}", problems.join("; "));
    }
    Ok((jobs, problems))
}

/// A label value: at most 63 alphanumerics, '-', '_' or '.', starting and
/// ending alphanumeric.
fn check_label_value(field: &str, value: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && (value.is_empty() || (value.starts_with(alnum) && value.ends_with(alnum)));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field}: {value:?} is not a valid label value (at most 63 letters, digits, '-', \
             '_' or '.', starting and ending with a letter or digit)"
        ))
    }
}

fn manifest(
    config: &K8sConfig,
    name: &str,
    worker_id: &str,
    iterations: i64,
    created_at: &str,
    resources: &Option<Value>,
) -> Result<Value> {
    let labels = json!({
        "app": "arbitrage-tuning",
        "session_id": config.session_id,
        "worker_id": worker_id,
        "component": "tuning",
        "mode": config.mode,
        "env": config.env,
    });
    let args = json!([
        "scripts/run_d24_tuning_session.py",
        "--config",
        config.config_path,
        "--iterations",
        iterations.to_string(),
        "--mode",
        config.mode,
        "--env",
        config.env,
        "--optimizer",
        config.optimizer,
        "--session-id",
        config.session_id,
        "--worker-id",
        worker_id,
        "--output-csv",
        format!("outputs/d29_k8s_session_{worker_id}.csv"),
    ]);
    let mut container = json!({
        "name": name,
        "image": config.image,
        "command": ["python"],
        "args": args,
        "env": environment(config, worker_id)?,
    });
    if let Some(r) = resources {
        container["resources"] = r.clone();
    }
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": config.k8s_namespace,
            "labels": labels,
            "annotations": {
                "description": format!("Arbitrage tuning job for {worker_id}"),
                "created_at": created_at,
            },
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "restartPolicy": "Never"},
            },
        },
    }))
}

/// The file a job is written to: `job-{index:02}-{name}.yaml`.
pub fn file_name(index: usize, name: &str) -> String {
    format!("job-{index:02}-{name}.yaml")
}

/// Python's `datetime.now().isoformat()`: local time, microseconds unless 0.
fn now_iso() -> String {
    let now = chrono::Local::now().naive_local();
    if now.and_utc().timestamp_subsec_micros() == 0 {
        now.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// Runs `flotilla plan`.
pub fn run(args: PlanArgs) -> Result<ExitCode> {
    let config = load_configs(&args.orchestrator_config, &args.k8s_config)?;
    let created_at = args.created_at.clone().unwrap_or_else(now_iso);
    let (jobs, warnings) = build_plan(&config, &created_at, args.strict)?;
    for w in &warnings {
        eprintln!("warning: {w} (--strict refuses this)");
    }
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("output-dir {}: cannot create", args.output_dir.display()))?;
    let mut files = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        let path = args.output_dir.join(file_name(index, &job.name));
        std::fs::write(&path, to_yaml(&job.manifest))
            .with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
    }
    print_summary(&config, &jobs, &files);
    match args.execute.as_deref() {
        None => Ok(ExitCode::SUCCESS),
        Some("local") => execute_local(&args, &config, &jobs),
        Some(other) => bail!("execute: unknown executor {other:?} (expected local)"),
    }
}

fn print_summary(config: &K8sConfig, jobs: &[PlannedJob], files: &[PathBuf]) {
    println!(
        "session {}: {} job(s) in namespace {}, {} iterations over {} worker(s)",
        config.session_id,
        jobs.len(),
        config.k8s_namespace,
        config.total_iterations,
        config.workers
    );
    for (job, file) in jobs.iter().zip(files) {
        println!(
            "  {}  {}  {} iteration(s)  {}",
            job.name,
            job.worker_id,
            job.iterations,
            file.display()
        );
    }
}

/// A queue id from a session id: what `[A-Za-z0-9_-]` allows, at most 64.
fn queue_id(session_id: &str) -> String {
    let cleaned = crate::commands::id_chars(session_id, 58);
    format!(
        "plan-{}",
        if cleaned.is_empty() {
            "session".into()
        } else {
            cleaned
        }
    )
}

/// D28: the plan as local subprocesses through the scheduler, one queue
/// per session with `workers` slots, recorded in the embedded log.
fn execute_local(args: &PlanArgs, config: &K8sConfig, jobs: &[PlannedJob]) -> Result<ExitCode> {
    let data_dir = crate::commands::study::data_dir_or_default(&args.data_dir);
    let queue = queue_id(&config.session_id);
    let python = args.python.clone();
    let jobs = jobs.to_vec();
    let workers = config.workers;
    crate::commands::run_system(async move {
        // The user's own plan, run by this process: every program allowed.
        let executors = base_executors(&data_dir.join("jobs"), &AllowedCommands::any());
        let scheduler = EmbeddedScheduler::open(&data_dir, executors).await?;
        let reply = scheduler
            .command(
                &queue,
                json!({"type": "configure_queue", "concurrency": workers,
                       "retain_finished": flotilla_messages::scheduler::retain_all(jobs.len())}),
            )
            .await?;
        if !reply.ok {
            bail!(
                "configure_queue: {}",
                crate::commands::study::refusal(&reply)
            );
        }
        for job in &jobs {
            let container = &job.manifest["spec"]["template"]["spec"]["containers"][0];
            let mut command = vec![python.clone()];
            command.extend(
                container["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string)),
            );
            let env: BTreeMap<String, String> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
                .collect();
            let spec = json!({"command": command, "env": env, "session_id": config.session_id,
                "worker_id": job.worker_id, "mode": config.mode, "expects_value": false});
            let reply = scheduler
                .command(
                    &queue,
                    json!({"type": "submit", "job_id": job.name, "spec": spec}),
                )
                .await?;
            if !reply.ok {
                bail!(
                    "submit {}: {}",
                    job.name,
                    crate::commands::study::refusal(&reply)
                );
            }
        }
        let view = scheduler.wait_all_final(&queue).await?;
        let mut failed = 0;
        for job in view["jobs"].as_array().into_iter().flatten() {
            let status = job["status"].as_str().unwrap_or("?");
            if status != "succeeded" {
                failed += 1;
            }
            let reason = job["reason"]
                .as_str()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default();
            println!(
                "  {}  {status}{reason}",
                job["job_id"].as_str().unwrap_or("?")
            );
        }
        println!(
            "queue {queue} in {}: {} job(s), {failed} not succeeded",
            data_dir.display(),
            jobs.len()
        );
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_split_like_d28() {
        assert_eq!(split_iterations(10, 3), vec![4, 3, 3]);
        assert_eq!(split_iterations(6, 2), vec![3, 3]);
        assert_eq!(split_iterations(2, 3), vec![1, 1, 0]);
    }

    #[test]
    fn queue_ids_are_valid_ids() {
        assert_eq!(
            queue_id("d29-k8s-demo-session"),
            "plan-d29-k8s-demo-session"
        );
        assert_eq!(queue_id("a b/c"), "plan-a-b-c");
        assert!(flotilla_messages::validate_id("queue", &queue_id(&"x".repeat(100))).is_ok());
    }
}
