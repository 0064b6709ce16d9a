//! The checks on the Kubernetes manifests (`deploy/kubernetes`,
//! `deploy/examples`): every overlay and example renders with `kubectl
//! kustomize`; every object passes `kubernetes-validate --strict` (the
//! Prometheus Operator kinds, which it has no schema for, pass a minimal
//! schema checked here, see [`crds`]); every pod spec meets the restricted
//! Pod Security Standard with a read-only root filesystem, except the
//! exceptions listed here ([`EXCEPTIONS`]); every container has resources
//! and every long-running one that runs Flotilla probes `/healthz` and
//! `/readyz` (a user's container beside it needs no probes); every metric an alert or the
//! dashboard names is in the real `/metrics` of the process that owns it;
//! every ServiceAccount is granted exactly what its kube clients' recorded
//! requests need; and a second `flotilla up` on a data dir in use refuses
//! to start.
//!
//! A missing `kubectl` (`KUBECTL_BIN`) or `kubernetes-validate`
//! (`KUBERNETES_VALIDATE_BIN`) is a failure; scripts/test installs both.

mod crds;
mod pod_security;
mod promql;

use crate::support::inference::{model_init, predict_body, Worker};
use crate::support::{
    flotilla_bin, free_port, http_client, output_within, tool, wait_until, FlotillaUp, SimAgent,
};
use flotilla_kube_replay::rbac::{parse_needs, Access, Grants};
use pod_security::{object_id, pod_specs, runs_flotilla, Violation};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Where the kustomizations to render live (each directory under them with
/// a `kustomization.yaml`).
const ROOTS: &[&str] = &["deploy/kubernetes/overlays", "deploy/examples"];

/// How long one tool run may take.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// One accepted breach of the restricted profile: the object, the field
/// (as [`Violation`] names it) and why the object needs it. A breach not
/// listed fails the test, and so does a listed one no manifest has.
struct Exception {
    object: &'static str,
    field: &'static str,
    reason: &'static str,
}

/// The agent's exceptions. (None yet: with the NVIDIA runtime class the
/// container toolkit mounts the driver's devices and NVML into the agent's
/// container, so it needs no host access of its own.)
const EXCEPTIONS: &[Exception] = &[];

/// Series Prometheus makes itself, which no process exports.
const PROMETHEUS_SERIES: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One rendered kustomization.
struct Rendered {
    /// Its directory, relative to the repository.
    dir: String,
    /// What `kubectl kustomize` printed.
    yaml: String,
    /// Its objects.
    objects: Vec<Value>,
}

/// Every directory with a kustomization under [`ROOTS`], sorted.
fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.is_dir() {
                walk(&path, found);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                found.push(dir.to_path_buf());
            }
        }
    }
    let mut found = Vec::new();
    for root in ROOTS {
        walk(&repo().join(root), &mut found);
    }
    found.sort();
    found
}

/// Every kustomization rendered once for the whole module (or why not).
fn rendered() -> &'static [Rendered] {
    static RENDERED: OnceLock<Result<Vec<Rendered>, String>> = OnceLock::new();
    RENDERED
        .get_or_init(render_all)
        .as_deref()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn render_all() -> Result<Vec<Rendered>, String> {
    let dirs = kustomizations();
    if dirs.is_empty() {
        return Err(format!("no kustomization.yaml under {ROOTS:?}"));
    }
    let kubectl = tool("KUBECTL_BIN", "kubectl");
    let mut rendered = Vec::new();
    let mut failures = Vec::new();
    for dir in dirs {
        let name = dir
            .strip_prefix(repo())
            .unwrap_or(&dir)
            .display()
            .to_string();
        let out = output_within(
            Command::new(&kubectl).arg("kustomize").arg(&dir),
            TOOL_LIMIT,
        )?;
        if !out.status.success() {
            failures.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let yaml = String::from_utf8(out.stdout).map_err(|e| format!("{name}: {e}"))?;
        match parse_documents(&yaml) {
            Ok(objects) => rendered.push(Rendered {
                dir: name,
                yaml,
                objects,
            }),
            Err(e) => failures.push(format!("{name}: rendered YAML does not parse: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(rendered)
    } else {
        Err(format!(
            "`kubectl kustomize` failed:\n{}",
            failures.join("\n")
        ))
    }
}

/// The objects of a multi-document YAML text.
fn parse_documents(yaml: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// Each (object, field) found in any rendered kustomization, with where.
fn violations_by_field(
    check: impl Fn(&pod_security::PodSpec) -> Vec<Violation>,
) -> BTreeMap<(String, String), (String, BTreeSet<String>)> {
    let mut found: BTreeMap<(String, String), (String, BTreeSet<String>)> = BTreeMap::new();
    for r in rendered() {
        for pod in pod_specs(&r.objects) {
            for v in check(&pod) {
                let entry = found
                    .entry((v.object, v.field))
                    .or_insert_with(|| (v.problem, BTreeSet::new()));
                entry.1.insert(r.dir.clone());
            }
        }
    }
    found
}

/// Fails listing `problems`, if any.
fn assert_none(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn every_overlay_and_example_renders_and_every_object_validates_strictly() {
    let scratch = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, r) in rendered().iter().enumerate() {
        let file = scratch.path().join(format!("{i}.yaml"));
        std::fs::write(&file, &r.yaml).unwrap();
        files.push(file);
    }
    let validate = tool("KUBERNETES_VALIDATE_BIN", "kubernetes-validate");
    let out = output_within(
        Command::new(validate).arg("--strict").args(&files),
        TOOL_LIMIT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    for (file, r) in files.iter().zip(rendered()) {
        let file = file.display().to_string();
        problems.extend(validation_problems(r, &report, &file));
    }
    assert!(
        out.status.success() || !problems.is_empty(),
        "kubernetes-validate failed:\n{report}"
    );
    assert_none("objects that do not validate", problems);
}

/// What `kubernetes-validate`'s `report` says is wrong with the objects of
/// `r` (written to `file`), plus what the hand-checked schemas find.
fn validation_problems(r: &Rendered, report: &str, file: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = report
        .lines()
        .filter(|l| l.contains(&format!(" {file} ")))
        .collect();
    for line in &lines {
        let hand_checked = crds::KINDS
            .iter()
            .any(|k| line.contains(&format!("Couldn't find schema for kind {k} ")));
        if line.starts_with("ERROR") || (line.starts_with("WARN") && !hand_checked) {
            problems.push(format!("{}: {}", r.dir, line.replace(file, "")));
        }
    }
    let custom: Vec<&Value> = r
        .objects
        .iter()
        .filter(|o| crds::KINDS.contains(&o["kind"].as_str().unwrap_or_default()))
        .collect();
    for object in &custom {
        for p in crds::problems(object) {
            problems.push(format!("{}: {} {p}", r.dir, object_id(object)));
        }
    }
    let passed = lines
        .iter()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    let built_in = r.objects.len() - custom.len();
    if passed != built_in && problems.is_empty() {
        problems.push(format!(
            "{}: {passed} of {built_in} built-in objects passed:\n{}",
            r.dir,
            lines.join("\n")
        ));
    }
    problems
}

#[test]
fn every_pod_spec_meets_the_restricted_pod_security_standard_but_the_listed_exceptions() {
    let found = violations_by_field(|pod| pod.security_violations());
    let listed = |object: &str, field: &str| {
        EXCEPTIONS
            .iter()
            .any(|e| e.object == object && e.field == field)
    };
    let mut problems: Vec<String> = found
        .iter()
        .filter(|((object, field), _)| !listed(object, field))
        .map(|((object, field), (problem, dirs))| {
            format!("{object} {field}: {problem} (in {dirs:?})")
        })
        .collect();
    for e in EXCEPTIONS {
        if !found.contains_key(&(e.object.to_string(), e.field.to_string())) {
            problems.push(format!(
                "stale exception {} {} ({}): no manifest needs it",
                e.object, e.field, e.reason
            ));
        }
    }
    assert_none("breaches of the restricted Pod Security Standard", problems);
}

#[test]
fn every_container_has_resources_and_every_long_running_flotilla_one_probes() {
    let problems = violations_by_field(|pod| pod.operational_violations())
        .into_iter()
        .map(|((object, field), (problem, dirs))| {
            format!("{object} {field}: {problem} (in {dirs:?})")
        })
        .collect();
    assert_none("containers without resources or probes", problems);
}

/// The probe rule holds the real manifests: each long-running Flotilla
/// container they have (there are some) is reported once its probes are
/// gone, so a manifest that loses them, or a container the rule no longer
/// recognises, fails.
#[test]
fn every_long_running_flotilla_container_of_the_manifests_is_held_to_its_probes() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for r in rendered() {
        for (i, object) in r.objects.iter().enumerate() {
            let Some(pod) = pod_specs(std::slice::from_ref(object)).pop() else {
                continue;
            };
            let servers: Vec<String> = pod
                .flotilla_servers()
                .into_iter()
                .map(|(at, _)| at)
                .collect();
            if servers.is_empty() {
                continue;
            }
            let mut stripped = object.clone();
            let pointer = format!("/{}", pod.path.replace('.', "/"));
            let spec = stripped.pointer_mut(&pointer).expect("the pod spec");
            for list in ["initContainers", "containers"] {
                for c in spec[list].as_array_mut().into_iter().flatten() {
                    if runs_flotilla(c) {
                        let fields = c.as_object_mut().expect("a container");
                        fields.remove("livenessProbe");
                        fields.remove("readinessProbe");
                    }
                }
            }
            let stripped_pods = pod_specs(std::slice::from_ref(&stripped));
            let reported: BTreeSet<String> = stripped_pods[0]
                .operational_violations()
                .into_iter()
                .map(|v| v.field)
                .collect();
            for at in &servers {
                checked += 1;
                for probe in ["livenessProbe", "readinessProbe"] {
                    let field = format!("{}.{at}.{probe}", pod.path);
                    if !reported.contains(&field) {
                        problems.push(format!(
                            "{} object {i} {}: {field} not reported without its probe",
                            r.dir, pod.object
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 0,
        "no long-running Flotilla container in the manifests"
    );
    assert_none("Flotilla containers the probe rule misses", problems);
}

/// The process that exports the metrics of each PrometheusRule group.
const RULE_GROUPS: &[(&str, Owner)] = &[
    ("flotilla-control-plane", Owner::ControlPlane),
    ("flotilla-agent", Owner::Agent),
    ("flotilla-inference-worker", Owner::Worker),
];

/// A process whose `/metrics` alerts read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    ControlPlane,
    Agent,
    Worker,
}

/// Where a metric name was found: a rule of a group, or a dashboard.
struct Use {
    /// `PrometheusRule/name group g alert A`, or `ConfigMap/name key`.
    place: String,
    /// The process that must export it (any of them for a dashboard).
    owner: Option<Owner>,
    /// The names it reads.
    names: BTreeSet<String>,
}

/// Every metric use of every rule and dashboard in the rendered
/// manifests, deduplicated (the same object in several overlays counts
/// once); an unknown rule group is a problem.
fn metric_uses() -> (Vec<Use>, Vec<String>) {
    let mut uses = BTreeMap::new();
    let mut problems = Vec::new();
    for object in rendered().iter().flat_map(|r| &r.objects) {
        let id = object_id(object);
        if object["kind"] == "PrometheusRule" {
            for group in object["spec"]["groups"].as_array().into_iter().flatten() {
                let name = group["name"].as_str().unwrap_or_default();
                let Some((_, owner)) = RULE_GROUPS.iter().find(|(g, _)| *g == name) else {
                    problems.push(format!("{id} group {name}: not one of {RULE_GROUPS:?} (which process exports its metrics?)"));
                    continue;
                };
                for rule in group["rules"].as_array().into_iter().flatten() {
                    let rule_name = rule["alert"]
                        .as_str()
                        .or(rule["record"].as_str())
                        .unwrap_or("?");
                    let place = format!("{id} group {name} rule {rule_name}");
                    let names = promql::metric_names(rule["expr"].as_str().unwrap_or_default());
                    uses.insert(
                        place.clone(),
                        Use {
                            place,
                            owner: Some(*owner),
                            names,
                        },
                    );
                }
            }
        }
        if object["kind"] == "ConfigMap" && object["metadata"]["labels"]["grafana_dashboard"] == "1"
        {
            for (key, text) in object["data"].as_object().into_iter().flatten() {
                let place = format!("{id} {key}");
                match serde_json::from_str::<Value>(text.as_str().unwrap_or_default()) {
                    Ok(dashboard) => {
                        let names = dashboard_metrics(&dashboard);
                        uses.insert(
                            place.clone(),
                            Use {
                                place,
                                owner: None,
                                names,
                            },
                        );
                    }
                    Err(e) => problems.push(format!("{place}: not JSON: {e}")),
                }
            }
        }
    }
    (uses.into_values().collect(), problems)
}

/// The metrics of every panel query (`expr`, at any depth) and template
/// variable query of a Grafana dashboard.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, names: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(expr)) => names.extend(promql::metric_names(expr)),
                        _ => walk(v, names),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    walk(&dashboard["panels"], &mut names);
    walk(&dashboard["rows"], &mut names);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = &variable["query"];
        let text = query
            .as_str()
            .or(query["query"].as_str())
            .unwrap_or_default();
        if variable["type"] == "query" {
            names.extend(promql::template_metric_names(text));
        }
    }
    names
}

/// The sample names of a Prometheus text exposition, with the `_bucket`,
/// `_sum` and `_count` series of each histogram (and `_sum`, `_count` of
/// each summary) its `# TYPE` lines declare.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut words = declared.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// GETs `url`'s `/metrics` text.
fn scrape(url: &str) -> String {
    let r = http_client()
        .get(format!("{url}/metrics"))
        .send()
        .expect("GET /metrics");
    assert!(r.status().is_success(), "{url}/metrics: {}", r.status());
    r.text().expect("metrics text")
}

/// `flotilla up` (embedded) with a sim pool and a study that ran through
/// its runner: the solver, scheduler, provisioner and run metrics all have
/// samples. Returns its `/metrics`.
fn control_plane_metrics(dir: &Path) -> String {
    let script = dir.join("eval.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nawk -v x=\"$ARQON_x\" 'BEGIN { printf \"RESULT=%f\\n\", x * x }'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pools = dir.join("pools.yaml");
    let yaml = "providers:\n  cloud: {type: sim}\npools:\n  gpu:\n    provider: cloud\n    min_nodes: 1\n    max_nodes: 2\n";
    std::fs::write(&pools, yaml).unwrap();
    let data = dir.join("data");
    let up = FlotillaUp::start_with_env(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--pools",
            pools.to_str().unwrap(),
            "--tick",
            "200ms",
        ],
        &[("FLOTILLA_RECONCILE_SECONDS", "1".as_ref())],
        dir,
    );
    let create = json!({"type": "create_study", "seed": 5, "budget": 4,
        "bounds": {"x": {"min": -1.0, "max": 1.0}},
        "runner": {"command": [script.to_str().unwrap()], "parallel": 2}});
    let (status, reply) = up.send("solver", "metrics", &create);
    assert_eq!(status, 200, "{reply}");
    // Until the run finished, the pool has a node and the run driver set
    // the run's gauges (at its next reconcile).
    wait_until(Duration::from_secs(60), || {
        let run = up.get("/v1/query/study_run/metrics").1;
        let pool = up.get("/v1/query/provisioner/gpu").1;
        let nodes = pool["result"]["nodes"].as_array().map_or(0, Vec::len);
        let done = run["result"]["status"] == "finished" && nodes > 0;
        done.then(|| scrape(&up.url))
            .filter(|text| text.contains("flotilla_study_run_active{"))
    })
    .unwrap_or_else(|| {
        panic!(
            "the study did not run or the pool did not fill:\n{}",
            up.log()
        )
    })
}

/// `flotilla agent --source sim` that played an XID: its `/metrics`.
fn agent_metrics(dir: &Path) -> String {
    let faults = dir.join("faults.yaml");
    std::fs::write(
        &faults,
        "- {at: 0s, kind: event, event: {kind: xid, gpu: 0, code: 13}}\n",
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let http = url.trim_start_matches("http://");
    let args = [
        "--http",
        http,
        "--interval",
        "100ms",
        "--faults",
        faults.to_str().unwrap(),
    ];
    let _agent = SimAgent::spawn("gpu-0", &args, dir);
    wait_until(Duration::from_secs(30), || {
        let text = http_client()
            .get(format!("{url}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.contains("flotilla_xid_errors_total").then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent never exported its XID:\n{}",
            std::fs::read_to_string(dir.join("agent-gpu-0.log")).unwrap_or_default()
        )
    })
}

/// `flotilla worker` after a `/predict` and a refused one (the errors
/// counter has a series from its first error on): its `/metrics`.
fn worker_metrics(dir: &Path) -> String {
    model_init(dir, "v1.0.0", 7);
    let worker = Worker::start(dir, &[], &[]);
    let (status, body, _) = worker.post("/predict", &predict_body(2, true));
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = worker.post("/predict", &json!({"observations": []}));
    assert_eq!(status, 422, "{body}");
    scrape(&worker.url)
}

#[test]
fn every_metric_an_alert_or_the_dashboard_names_is_exported_by_its_process() {
    let (uses, mut problems) = metric_uses();
    assert!(
        uses.iter().any(|u| u.owner.is_some()),
        "no PrometheusRule alerts in the manifests"
    );
    assert!(
        uses.iter().any(|u| u.owner.is_none()),
        "no Grafana dashboard ConfigMap (label grafana_dashboard: \"1\")"
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let exported: BTreeMap<Owner, BTreeSet<String>> = std::thread::scope(|s| {
        let plane = s.spawn(|| control_plane_metrics(dirs[0].path()));
        let agent = s.spawn(|| agent_metrics(dirs[1].path()));
        let worker = s.spawn(|| worker_metrics(dirs[2].path()));
        [
            (Owner::ControlPlane, plane),
            (Owner::Agent, agent),
            (Owner::Worker, worker),
        ]
        .into_iter()
        .map(|(owner, t)| (owner, exported_names(&t.join().expect("scraped"))))
        .collect()
    });
    for u in &uses {
        let known = |name: &String| match u.owner {
            Some(owner) => exported[&owner].contains(name),
            None => exported.values().any(|names| names.contains(name)),
        };
        for name in u
            .names
            .iter()
            .filter(|n| !known(n) && !PROMETHEUS_SERIES.contains(&n.as_str()))
        {
            let by = u
                .owner
                .map_or("any process".to_string(), |o| format!("{o:?}"));
            problems.push(format!("{}: {name} is not exported by {by}", u.place));
        }
    }
    assert_none("metrics no process exports", problems);
}

#[test]
fn a_second_up_on_a_data_dir_in_use_refuses_to_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _first = FlotillaUp::start(&["--data-dir", data.to_str().unwrap()], dir.path());
    let second = output_within(
        Command::new(flotilla_bin())
            .args(["up", "--data-dir", data.to_str().unwrap()])
            .args(["--http", &format!("127.0.0.1:{}", free_port())])
            .env_remove("FLOTILLA_NATS")
            .current_dir(dir.path()),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second writer started:\n{stderr}"
    );
    let said = format!(
        "data_dir {}: the event log in {}",
        data.display(),
        data.join("log").display()
    );
    assert!(
        stderr.contains(&said) && stderr.contains("in use by another process"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// What the needs file of `actor`'s kube client lists.
fn needs_of(actor: &str) -> BTreeSet<Access> {
    let file = repo().join(format!("actors/{actor}/kube-needs.txt"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    parse_needs(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The value of option `name` (`--name value` or `--name=value`) in `words`.
fn option<'a>(words: &[&'a str], name: &str) -> Option<&'a str> {
    let inline = format!("{name}=");
    words
        .iter()
        .enumerate()
        .find_map(|(i, w)| match w.strip_prefix(inline.as_str()) {
            Some(value) => Some(value),
            None => (*w == name).then(|| words.get(i + 1).copied()).flatten(),
        })
}

/// What the kube clients of a container running `flotilla`
/// ([`runs_flotilla`]) need: `up` runs the scheduler's and the
/// provisioner's (those of `--only`, when given), `run --executor
/// kubernetes` the scheduler's; anything else, and any other container,
/// none.
fn container_needs(container: &Value) -> (bool, BTreeSet<Access>) {
    if !runs_flotilla(container) {
        return (false, BTreeSet::new());
    }
    let words: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .filter(|w| !w.ends_with("flotilla"))
        .collect();
    let subcommand = words
        .iter()
        .find(|w| !w.starts_with('-'))
        .copied()
        .unwrap_or_default();
    let actors: Vec<&str> = match subcommand {
        "up" => match option(&words, "--only") {
            Some(only) => only.split(',').map(str::trim).collect(),
            None => vec!["scheduler", "provisioner"],
        },
        "run" if option(&words, "--executor") == Some("kubernetes") => vec!["scheduler"],
        _ => vec![],
    };
    let needs = actors
        .into_iter()
        .filter(|a| ["scheduler", "provisioner"].contains(a))
        .flat_map(needs_of)
        .collect();
    (subcommand == "up", needs)
}

#[test]
fn each_service_account_is_granted_exactly_what_its_kube_clients_call() {
    let mut problems = Vec::new();
    let mut control_planes = 0;
    for r in rendered() {
        for pod in pod_specs(&r.objects) {
            let account = pod.spec["serviceAccountName"].as_str().unwrap_or("default");
            let mut needs = BTreeSet::new();
            for c in pod.spec["containers"].as_array().into_iter().flatten() {
                let (control_plane, of_container) = container_needs(c);
                control_planes += usize::from(control_plane);
                needs.extend(of_container);
            }
            match Grants::of(&r.objects, account) {
                Ok(grants) => {
                    problems.extend(grants.check(&needs).into_iter().map(|p| {
                        format!("{}: {} (ServiceAccount {account}): {p}", r.dir, pod.object)
                    }))
                }
                Err(e) => problems.push(format!("{}: {e}", r.dir)),
            }
        }
    }
    assert!(
        control_planes > 0,
        "no pod runs `flotilla up` in the manifests"
    );
    assert_none("RBAC that differs from the recorded API requests", problems);
}
