//! End-to-end: the CarlaRL client's expectations the other inference tests
//! leave out, against the real `flotilla worker` on 127.0.0.1 — bodies must
//! say they are JSON (any `+json` type does), CarlaRL's labelled metric
//! families for its Grafana dashboard, CarlaRL's settings from the
//! environment and its loose request bodies — and the modes of the files
//! `flotilla model init` writes.

use crate::support::inference::{
    first_error, model_init, observation, predict_body, samples, Sample, Worker,
};
use crate::support::{flotilla_bin, http_client};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// POSTs `body` to `path` with `content_type` (none if `None`): (status, reply).
fn post(
    worker: &Worker,
    path: &str,
    body: Option<&Value>,
    content_type: Option<&str>,
) -> (u16, Value) {
    let mut req = http_client().post(format!("{}{path}", worker.url));
    if let Some(body) = body {
        req = req.body(serde_json::to_vec(body).unwrap());
    }
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let r = req.send().expect("POST");
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let status = r.status().as_u16();
    let reply: Value = r.json().unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(reply["details"]["request_id"], id.as_str(), "{reply}");
    }
    (status, reply)
}

#[test]
fn bodies_must_say_they_are_json_and_any_json_suffix_does() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    model_init(dir.path(), "v0.2.0", 1);
    let worker = Worker::start(dir.path(), &[], &[("MODEL_VERSION", "v0.1.0")]);
    let body = predict_body(1, true);

    // No Content-Type: CarlaRL's FastAPI reads the bytes, not an object.
    let (status, reply) = post(&worker, "/predict", Some(&body), None);
    assert_eq!(
        (status, reply["error"].as_str()),
        (422, Some("VALIDATION_ERROR")),
        "{reply}"
    );
    assert_eq!(
        first_error(&reply),
        ("body".into(), "model_attributes_type".into())
    );
    for not_json in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, reply) = post(&worker, "/predict", Some(&body), Some(not_json));
        assert_eq!(status, 422, "{not_json}: {reply}");
        assert_eq!(first_error(&reply).0, "body", "{not_json}");
    }
    for json_type in [
        "application/vnd.api+json",
        "application/problem+json; charset=utf-8",
        "Application/JSON ; Charset=UTF-8",
    ] {
        let (status, reply) = post(&worker, "/predict", Some(&body), Some(json_type));
        assert_eq!(status, 200, "{json_type}: {reply}");
        assert_eq!(reply["actions"].as_array().map(Vec::len), Some(1));
    }

    // The control routes: no body needs no type, a body needs one.
    assert_eq!(post(&worker, "/warmup", None, None).0, 200);
    let (status, reply) = post(&worker, "/warmup", Some(&json!({})), None);
    assert_eq!(
        (status, first_error(&reply).0.as_str()),
        (422, "body"),
        "{reply}"
    );
    let vnd = Some("application/vnd.api+json");
    assert_eq!(post(&worker, "/warmup", Some(&json!({})), vnd).0, 200);
    let activate = "/versions/v0.2.0/activate";
    let (status, reply) = post(&worker, activate, Some(&json!({})), None);
    assert_eq!(
        (status, reply["error"].as_str()),
        (422, Some("VALIDATION_ERROR"))
    );
    assert_eq!(
        worker.get("/healthz").1["version"],
        "v0.1.0",
        "a refused switch changes nothing"
    );
    let problem = Some("application/problem+json; charset=utf-8");
    let (status, reply) = post(&worker, activate, Some(&json!({})), problem);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(worker.get("/healthz").1["version"], "v0.2.0");
}

/// CarlaRL's families (`T-Py-T/Carla_RL` `model-serving/src/monitoring/metrics.py`)
/// and their labels; `+` marks a histogram.
const CARLA_FAMILIES: &[(&str, &[&str])] = &[
    (
        "+carla_rl_inference_duration_seconds",
        &["model_version", "device", "batch_size_range"],
    ),
    (
        "carla_rl_inference_requests_total",
        &["model_version", "device", "status"],
    ),
    ("+carla_rl_batch_size", &["model_version"]),
    ("carla_rl_deterministic_requests_total", &["model_version"]),
    ("carla_rl_cpu_usage_percent", &[]),
    ("carla_rl_memory_usage_bytes", &[]),
    ("carla_rl_memory_usage_percent", &[]),
    ("carla_rl_process_cpu_percent", &[]),
    ("carla_rl_process_memory_bytes", &[]),
    (
        "carla_rl_errors_total",
        &["error_type", "endpoint", "model_version"],
    ),
    (
        "carla_rl_http_requests_total",
        &["method", "endpoint", "status_code"],
    ),
    (
        "+carla_rl_request_duration_seconds",
        &["method", "endpoint", "status_code"],
    ),
    ("carla_rl_model_loaded", &["model_version", "device"]),
    ("carla_rl_model_warmed_up", &["model_version"]),
    (
        "+carla_rl_model_loading_duration_seconds",
        &["model_version"],
    ),
    (
        "+carla_rl_model_warmup_duration_seconds",
        &["model_version"],
    ),
    ("carla_rl_active_requests", &[]),
    ("carla_rl_request_queue_length", &[]),
    ("carla_rl_service_uptime_seconds", &[]),
    ("carla_rl_service_startup_timestamp_seconds", &[]),
    // The seed's alert and Grafana panels, and the standard process families.
    (
        "+http_request_duration_seconds",
        &["method", "endpoint", "status"],
    ),
    ("http_requests_total", &["method", "endpoint", "status"]),
    ("process_cpu_seconds_total", &[]),
    ("process_resident_memory_bytes", &[]),
];

/// Asserts every family has a series with exactly its labels.
fn assert_families(all: &[Sample]) {
    for (family, labels) in CARLA_FAMILIES {
        let (name, sample) = match family.strip_prefix('+') {
            Some(name) => (name, format!("{name}_count")),
            None => (*family, family.to_string()),
        };
        let series: Vec<&Sample> = all.iter().filter(|s| s.name == sample).collect();
        assert!(!series.is_empty(), "{name} has no series");
        for s in series {
            let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            let mut expected = labels.to_vec();
            expected.sort_unstable();
            assert_eq!(keys, expected, "{name}'s labels");
        }
    }
}

/// The value of the one sample `name` with exactly `labels`.
fn value(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = all
        .iter()
        .filter(|s| s.name == name && s.labels.len() == labels.len())
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

#[test]
fn metrics_carry_carla_rls_labelled_families_from_the_start() {
    // Nothing serves yet: every family is there, labelled `unknown`.
    let empty = tempfile::tempdir().unwrap();
    let idle = Worker::start_degraded(empty.path(), &[], &[]);
    let before = samples(&idle.metrics());
    assert_families(&before);
    let unknown = [("model_version", "unknown"), ("device", "cpu")];
    assert_eq!(value(&before, "carla_rl_model_loaded", &unknown), 0.0);
    drop(idle);

    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let worker = Worker::start(dir.path(), &[], &[]);
    for _ in 0..3 {
        assert_eq!(worker.post("/predict", &predict_body(2, true)).0, 200);
    }
    assert_eq!(worker.post("/predict", &predict_body(40, false)).0, 200);
    assert_eq!(worker.post("/predict", &json!({"observations": []})).0, 422);
    assert_eq!(worker.post("/warmup", &json!({})).0, 200);
    let all = samples(&worker.metrics());
    assert_families(&all);

    let v = ("model_version", "v0.1.0");
    let cpu = ("device", "cpu");
    let ok = [v, cpu, ("status", "success")];
    assert_eq!(value(&all, "carla_rl_inference_requests_total", &ok), 4.0);
    assert_eq!(
        value(&all, "carla_rl_deterministic_requests_total", &[v]),
        3.0
    );
    assert_eq!(value(&all, "carla_rl_batch_size_count", &[v]), 4.0);
    assert_eq!(value(&all, "carla_rl_batch_size_sum", &[v]), 46.0);
    let forty = [v, cpu, ("batch_size_range", "33-64")];
    assert!(value(&all, "carla_rl_inference_duration_seconds_count", &forty) >= 1.0);
    assert!(value(&all, "carla_rl_inference_duration_seconds_sum", &forty) > 0.0);
    let invalid = [
        ("error_type", "VALIDATION_ERROR"),
        ("endpoint", "/predict"),
        v,
    ];
    assert_eq!(value(&all, "carla_rl_errors_total", &invalid), 1.0);
    let route = |status| {
        [
            ("method", "POST"),
            ("endpoint", "/predict"),
            ("status_code", status),
        ]
    };
    assert_eq!(
        value(&all, "carla_rl_http_requests_total", &route("200")),
        4.0
    );
    assert_eq!(
        value(&all, "carla_rl_http_requests_total", &route("422")),
        1.0
    );
    assert_eq!(
        value(
            &all,
            "carla_rl_request_duration_seconds_count",
            &route("200")
        ),
        4.0
    );
    let seed_route = [
        ("method", "POST"),
        ("endpoint", "/predict"),
        ("status", "200"),
    ];
    assert_eq!(value(&all, "http_requests_total", &seed_route), 4.0);
    let loaded: Vec<&Sample> = all
        .iter()
        .filter(|s| s.name == "carla_rl_model_loaded")
        .collect();
    assert_eq!(loaded.len(), 1, "only the serving version: {loaded:?}");
    assert_eq!(value(&all, "carla_rl_model_loaded", &[v, cpu]), 1.0);
    assert_eq!(value(&all, "carla_rl_model_warmed_up", &[v]), 1.0);
    assert_eq!(
        value(&all, "carla_rl_model_loading_duration_seconds_count", &[v]),
        1.0
    );
    assert!(value(&all, "carla_rl_model_warmup_duration_seconds_count", &[v]) >= 2.0);
    assert!(
        value(&all, "carla_rl_active_requests", &[]) >= 1.0,
        "the scrape itself"
    );
    assert_eq!(value(&all, "carla_rl_request_queue_length", &[]), 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&all, "carla_rl_service_startup_timestamp_seconds", &[]);
    assert!((now - 600.0..=now).contains(&started), "{started} vs {now}");
    assert!(value(&all, "carla_rl_service_uptime_seconds", &[]) > 0.0);
    let percent = |name| value(&all, name, &[]);
    assert!((0.0..=100.0).contains(&percent("carla_rl_cpu_usage_percent")));
    assert!((0.0..100.0).contains(&percent("carla_rl_memory_usage_percent")));
    assert!(percent("carla_rl_memory_usage_percent") > 0.0);
    assert!(percent("carla_rl_memory_usage_bytes") > 0.0);
    assert!(percent("carla_rl_process_cpu_percent") >= 0.0);
    let rss = percent("carla_rl_process_memory_bytes");
    assert!(rss > 1e6, "{rss}");
    let standard = percent("process_resident_memory_bytes");
    assert!((standard / rss - 1.0).abs() < 0.5, "{standard} vs {rss}");
    // The standard collector counts whole CPU seconds: 0 this young.
    assert!(percent("process_cpu_seconds_total") >= 0.0);
    let process_start = percent("process_start_time_seconds");
    assert!(
        (started - 5.0..=started + 1.0).contains(&process_start),
        "{process_start}"
    );
}

#[test]
fn carla_rl_settings_come_from_the_environment_and_bodies_are_loose() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    model_init(dir.path(), "v0.2.0", 1);
    let env = [
        ("MODEL_VERSION", "v0.1.0"),
        ("WORKERS", "2"),
        ("USE_GPU", "false"),
    ];
    let worker = Worker::start_from_env(dir.path(), &env);
    let (_, health) = worker.get("/healthz");
    assert_eq!(
        (health["version"].as_str(), health["device"].as_str()),
        (Some("v0.1.0"), Some("cpu")),
        "MODEL_VERSION wins over the newest: {health}"
    );
    let (_, versions) = worker.get("/versions");
    assert_eq!(
        versions["selection_strategy"],
        "pinned: MODEL_VERSION=v0.1.0"
    );
    let root = Path::new(versions["artifacts_root"].as_str().unwrap());
    assert_eq!(
        root.canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );

    // `deterministic` defaults to false, and fields CarlaRL does not know are ignored.
    let mut obs = observation();
    obs["lidar"] = json!([1, 2, 3]);
    let loose = json!({"observations": [obs], "client": "carla-0.9.15"});
    let (status, reply, _) = worker.post("/predict", &loose);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["deterministic"], false);
    assert_eq!(reply["version"], "v0.1.0");
}

/// `flotilla model init DIR` under `umask`: each written file's mode.
fn init_modes(umask: &str, format: &str) -> Vec<(String, u32)> {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask {umask} && exec \"$0\" model init \"$1\" --format {format}"
        ))
        .arg(flotilla_bin())
        .arg(dir.path())
        .output()
        .expect("run flotilla model init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut modes: Vec<(String, u32)> = std::fs::read_dir(dir.path().join("v0.1.0"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            (e.file_name().to_string_lossy().into_owned(), mode)
        })
        .collect();
    modes.sort();
    modes
}

#[test]
fn model_init_writes_every_file_with_the_umasks_mode() {
    for format in ["safetensors", "pytorch"] {
        let shared = init_modes("022", format);
        assert_eq!(shared.len(), 3, "{shared:?}");
        for (name, mode) in &shared {
            assert_eq!(*mode, 0o644, "{format}: {name} is {mode:o}");
        }
        for (name, mode) in init_modes("077", format) {
            assert_eq!(mode, 0o600, "{format}: {name} is {mode:o} under umask 077");
        }
    }
}
