//! The containerized fleet of `deploy/compose/` as a test fixture: the
//! images built once per test process from the binary under test
//! (`deploy/image/build.sh`, no registry), and a Compose project of its own
//! (a unique project name, so its containers, network and volumes are the
//! test's alone) that is taken down with its volumes when dropped.
//!
//! Everything the tests reach is on loopback (the ports Compose publishes
//! on 127.0.0.1) or inside the project's own private network (`cli` runs).
//! A test that needs Docker fails when it is missing; it never skips.

use super::{flotilla_bin, http_client};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tag the tests give both images, so a user's release images of the
/// same names are left alone.
pub const TEST_TAG: &str = "e2e";

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` and returns its output; panics (naming the command)
/// when it cannot start, as for a missing Docker.
pub fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} {args:?}: {e} (Docker and docker-compose are required)")
        })
}

/// Like [`run`], asserting success.
pub fn run_ok(program: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = run(program, args, envs);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Builds `flotilla/flotilla:e2e` and `flotilla/nats-server:e2e` once per
/// test process, from the binary under test; returns build.sh's size table.
pub fn images() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = repo_root().join("deploy/image/build.sh");
        let bin = flotilla_bin();
        let mut envs = vec![
            ("FLOTILLA_BIN", bin.to_str().unwrap()),
            ("IMAGE_TAG", TEST_TAG),
        ];
        let nats = std::env::var("NATS_SERVER_BIN").unwrap_or_default();
        if !nats.is_empty() {
            envs.push(("NATS_SERVER_BIN", &nats));
        }
        run_ok("bash", &[script.to_str().unwrap()], &envs)
    })
}

/// The flotilla image the tests run.
pub fn flotilla_image() -> String {
    format!("flotilla/flotilla:{TEST_TAG}")
}

/// The nats-server image the tests run.
pub fn nats_image() -> String {
    format!("flotilla/nats-server:{TEST_TAG}")
}

/// One Compose project of `deploy/compose/compose.yaml`.
pub struct Fleet {
    project: String,
    file: PathBuf,
    envs: std::cell::RefCell<Vec<(String, String)>>,
    /// Published addresses by (service, port), and container ids, until a
    /// command moves a container.
    lookups: std::cell::RefCell<BTreeMap<(String, u16), String>>,
    log_dir: PathBuf,
}

impl Fleet {
    /// A project named after this process and `name`, with the test
    /// images and the trial scripts of `trials`; `envs` add Compose
    /// variables (`FLOTILLA_LEASE_SECONDS`...). Nothing starts yet.
    pub fn new(name: &str, trials: &Path, envs: &[(&str, &str)], log_dir: &Path) -> Fleet {
        images();
        let mut all = vec![
            ("FLOTILLA_IMAGE".to_string(), flotilla_image()),
            ("NATS_IMAGE".to_string(), nats_image()),
            ("FLOTILLA_TRIALS".to_string(), trials.display().to_string()),
        ];
        all.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Fleet {
            project: format!("flotilla-e2e-{name}-{}", std::process::id()),
            file: repo_root().join("deploy/compose/compose.yaml"),
            envs: std::cell::RefCell::new(all),
            lookups: Default::default(),
            log_dir: log_dir.to_path_buf(),
        }
    }

    /// `docker-compose <args>` in this project, with its output.
    pub fn compose_output(&self, args: &[&str]) -> Output {
        // Any command but these may move a container to new ports.
        let reads = ["port", "ps", "logs", "run", "config"];
        if !args.iter().any(|a| reads.contains(a)) {
            self.lookups.borrow_mut().clear();
        }
        let file = self.file.to_str().unwrap();
        let mut all = vec!["-p", &self.project, "-f", file];
        all.extend_from_slice(args);
        let owned = self.envs.borrow().clone();
        let envs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        run("docker-compose", &all, &envs)
    }

    /// `docker-compose <args>`, asserting success (with every service's
    /// log when it fails); returns stdout.
    pub fn compose(&self, args: &[&str]) -> String {
        let out = self.compose_output(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed ({}):\n{}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Sets a Compose variable for the commands that follow.
    pub fn set_env(&self, name: &str, value: &str) {
        let mut envs = self.envs.borrow_mut();
        envs.retain(|(k, _)| k != name);
        envs.push((name.to_string(), value.to_string()));
    }

    /// Every service's log (and a copy in the test's directory).
    pub fn logs(&self) -> String {
        let out = self.compose_output(&["logs", "--no-color", "--timestamps"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let _ = std::fs::write(self.log_dir.join(format!("{}.log", self.project)), &text);
        // The tail is what explains a failure; the file has it all.
        let start = text.len().saturating_sub(60_000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_string()
    }

    /// The container id of `service` (panics when it has none).
    pub fn container(&self, service: &str) -> String {
        // Cached with the ports: both change only when a command moves a
        // container, and polling health would otherwise run docker-compose
        // twice a second.
        let key = (format!("container {service}"), 0);
        if let Some(id) = self.lookups.borrow().get(&key) {
            return id.clone();
        }
        let id = self.compose(&["ps", "-q", service]).trim().to_string();
        assert!(!id.is_empty(), "{service} has no container");
        self.lookups.borrow_mut().insert(key, id.clone());
        id
    }

    /// `docker inspect --format <format>` of `service`'s container.
    pub fn inspect(&self, service: &str, format: &str) -> String {
        let out = run(
            "docker",
            &["inspect", "--format", format, &self.container(service)],
            &[],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `http://127.0.0.1:<published>` of a service's container port.
    pub fn url(&self, service: &str, port: u16) -> String {
        let key = (service.to_string(), port);
        if let Some(url) = self.lookups.borrow().get(&key) {
            return url.clone();
        }
        let out = self.compose(&["port", service, &port.to_string()]);
        let addr = out.trim();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "{service}:{port} is published on {addr:?}, not loopback only"
        );
        let url = format!("http://{addr}");
        self.lookups.borrow_mut().insert(key, url.clone());
        url
    }

    /// Waits until each of `services` is running and its health check
    /// passes (a service without one: running).
    pub fn wait_healthy(&self, services: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        for service in services {
            loop {
                let state = self.inspect(
                    service,
                    "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                );
                if state == "running healthy" || state == "running" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{service} is {state:?} after {within:?}:\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// Waits until each NATS node's monitoring port says it is healthy
    /// with JetStream (the image has no tool for a Compose health check).
    pub fn wait_nats_healthy(&self, nodes: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        let client = http_client();
        for node in nodes {
            let url = format!("{}/healthz", self.url(node, 8222));
            while !client
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                assert!(
                    Instant::now() < deadline,
                    "{node} not healthy:\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// `docker-compose run --rm <service> <args>` inside the project's
    /// network: (exit success, stdout, stderr).
    pub fn run_in(&self, service: &str, args: &[&str]) -> (bool, String, String) {
        let mut all = vec!["run", "--rm", "--no-deps", "-T", service];
        all.extend_from_slice(args);
        let out = self.compose_output(&all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// A token the set-up stored in the secrets volume (`admin.token`).
    pub fn token(&self, name: &str) -> String {
        let (ok, stdout, stderr) = self.run_in("setup", &["print", name]);
        assert!(ok, "no {name}: {stderr}");
        stdout.trim().to_string()
    }

    /// The project's network (`<project>_fleet`).
    pub fn network(&self) -> String {
        format!("{}_fleet", self.project)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.logs();
        let _ = self.compose_output(&[
            "--profile",
            "spare",
            "--profile",
            "tools",
            "down",
            "-v",
            "--remove-orphans",
            "-t",
            "2",
        ]);
    }
}

/// GETs `url` with a bearer token: (status, JSON or Null).
pub fn get_json(url: &str, token: &str) -> (u16, Value) {
    match http_client().get(url).bearer_auth(token).send() {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// POSTs JSON with a bearer token (and an idempotency key): (status, JSON
/// or Null); status 0 when no answer came.
pub fn post_json(url: &str, token: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = http_client().post(url).bearer_auth(token).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}
