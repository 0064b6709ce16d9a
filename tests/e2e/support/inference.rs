//! Shared harness of the inference end-to-end tests: example artifacts
//! written by `flotilla model init`, and the real `flotilla worker` as a
//! child process on a free 127.0.0.1 port.

use super::{flotilla, flotilla_bin, free_port, http_client};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes version `version` of the example model into `dir`.
pub fn model_init(dir: &Path, version: &str, seed: u64) -> PathBuf {
    let out = flotilla(&[
        "model",
        "init",
        dir.to_str().unwrap(),
        "--version",
        version,
        "--seed",
        &seed.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(version)
}

/// One observation CarlaRL's README sends.
pub fn observation() -> Value {
    json!({"speed": 25.5, "steering": 0.1, "sensors": [0.8, 0.2, 0.5]})
}

/// A `/predict` body with `n` observations.
pub fn predict_body(n: usize, deterministic: bool) -> Value {
    json!({"observations": vec![observation(); n], "deterministic": deterministic})
}

/// A running `flotilla worker`; killed (by its pid) on drop.
pub struct Worker {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: PathBuf,
}

impl Worker {
    /// Starts `flotilla worker --artifacts <dir> --http 127.0.0.1:<free> <extra>`
    /// with `env` and waits until `/readyz` answers (a model serves, warm).
    pub fn start(artifacts: &Path, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let mut worker = Self::start_degraded(artifacts, extra, env);
        worker.wait_for("/readyz");
        worker
    }

    /// Like [`Worker::start`] but waits only for `/healthz` (the process answers).
    pub fn start_degraded(artifacts: &Path, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let mut args = vec!["--artifacts", artifacts.to_str().unwrap(), "--http", &http];
        args.extend_from_slice(extra);
        Self::spawn(artifacts, port, &args, env)
    }

    /// Starts `flotilla worker` configured only by CarlaRL's environment
    /// variables: `ARTIFACT_DIR=<artifacts>`, `PORT=<free>` and `env`;
    /// waits until `/readyz` answers.
    pub fn start_from_env(artifacts: &Path, env: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let (dir, port_text) = (artifacts.to_str().unwrap(), port.to_string());
        let mut all = vec![("ARTIFACT_DIR", dir), ("PORT", port_text.as_str())];
        all.extend_from_slice(env);
        let mut worker = Self::spawn(artifacts, port, &[], &all);
        worker.wait_for("/readyz");
        worker
    }

    /// Spawns `flotilla worker <args>` with `env`, answering on `port`,
    /// and waits until `/healthz` answers.
    fn spawn(artifacts: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let log = artifacts.join(format!("worker-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(flotilla_bin());
        cmd.arg("worker")
            .args(args)
            .env_remove("PORT")
            .env_remove("FLOTILLA_NATS")
            .env_remove("MODEL_VERSION")
            .env_remove("ARTIFACT_DIR")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn flotilla worker");
        let mut worker = Worker {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        worker.wait_for("/healthz");
        worker
    }

    /// Waits until `path` answers 200.
    pub fn wait_for(&mut self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = http_client();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("flotilla worker exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = client.get(format!("{}{path}", self.url)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{path} never answered 200:\n{}", self.log());
    }

    /// The worker's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`: (status, body as JSON or Null, X-Request-ID).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = http_client()
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// POST JSON to `path`: (status, body, X-Request-ID).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value, String) {
        self.post_raw(path, serde_json::to_vec(body).unwrap(), "application/json")
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        http_client()
            .get(format!("{}/metrics", self.url))
            .send()
            .and_then(|r| r.text())
            .expect("GET /metrics")
    }

    /// POST raw bytes with a content type.
    pub fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> (u16, Value, String) {
        let r = http_client()
            .post(format!("{}{path}", self.url))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .expect("POST");
        let id = header(&r, "x-request-id");
        (r.status().as_u16(), r.json().unwrap_or(Value::Null), id)
    }
}

/// The first validation error of a 422 body: (field, type).
pub fn first_error(body: &Value) -> (String, String) {
    let e = &body["details"]["validation_errors"][0];
    let text = |key: &str| e[key].as_str().unwrap_or_default().to_string();
    (text("field"), text("type"))
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`_bucket`, `_sum`, `_count` included).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// The samples of a Prometheus text exposition (label values without
/// escapes, as the worker writes them).
pub fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include every one of `with`.
pub fn sum_of(exposition: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    samples(exposition)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// A response header as a string ("" when absent).
pub fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
