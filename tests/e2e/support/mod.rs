//! Shared harness for the end-to-end tests: the real `flotilla` binary as a
//! child process on a free loopback port, and small HTTP helpers; the
//! inference tests' own harness is [`inference`], the headless browser
//! [`chromium`].

pub mod api_docs;
pub mod chromium;
pub mod compose;
pub mod devtools;
pub mod inference;
pub mod nats_security;

use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn flotilla_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flotilla"))
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An external tool the tests need: `$<env>`, else `name` on `PATH`, else
/// the workspace venv (where scripts/test installs it). Missing is a
/// failure, never a skip.
pub fn tool(env: &str, name: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env).filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    on_path(name)
        .or_else(|| venv.is_file().then_some(venv))
        .unwrap_or_else(|| {
            panic!("{name} not found: run scripts/test (it installs it into .venv), or set {env}")
        })
}

/// The file `name` in a directory of `PATH`, if any.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `command` to completion with its output captured; kills it (by its
/// own pid) and says so if it runs longer than `within`.
pub fn output_within(command: &mut Command, within: Duration) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {command:?}: {e}"))?;
    // Drained while it runs, so a big output never blocks it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + within;
    let status = loop {
        match child
            .try_wait()
            .map_err(|e| format!("wait for {command:?}: {e}"))?
        {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{command:?} still ran after {within:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `flotilla <args>` to completion.
pub fn flotilla(args: &[&str]) -> Output {
    Command::new(flotilla_bin())
        .args(args)
        .env_remove("FLOTILLA_NATS")
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .expect("run flotilla")
}

/// A running `flotilla up`.
pub struct FlotillaUp {
    child: Option<Child>,
    args: Vec<String>,
    /// Extra environment of the child (the test process's own is shared by
    /// every test, so it is never changed).
    envs: Vec<(String, OsString)>,
    /// The gateway's base URL.
    pub url: String,
    log_path: PathBuf,
}

impl FlotillaUp {
    /// Starts `flotilla up <extra> --http 127.0.0.1:<free>` and waits for `/readyz`.
    /// stderr goes to `log_dir/up.log` (appended across restarts).
    pub fn start(extra: &[&str], log_dir: &Path) -> FlotillaUp {
        Self::start_with_env(extra, &[], log_dir)
    }

    /// Like [`FlotillaUp::start`], with `envs` added to the child's
    /// environment (on every restart too).
    pub fn start_with_env(extra: &[&str], envs: &[(&str, &OsStr)], log_dir: &Path) -> FlotillaUp {
        let port = free_port();
        let mut args: Vec<String> = vec!["up".into(), "--http".into(), format!("127.0.0.1:{port}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut up = FlotillaUp {
            child: None,
            args,
            envs: envs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_os_string()))
                .collect(),
            url: format!("http://127.0.0.1:{port}"),
            log_path: log_dir.join("up.log"),
        };
        up.spawn();
        up
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open up.log");
        let child = Command::new(flotilla_bin())
            .args(&self.args)
            .env_remove("FLOTILLA_NATS")
            .env_remove("FLOTILLA_DATA_DIR")
            .envs(self.envs.iter().map(|(name, value)| (name, value)))
            // Relative defaults (`.flotilla`, its `jobs`) land in the test's
            // own directory, never in the repository.
            .current_dir(self.log_path.parent().expect("log in a directory"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn flotilla up");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60));
    }

    /// Waits until `/readyz` answers 200; panics with the log otherwise.
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let client = http_client();
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("flotilla up exited with {status}:\n{}", self.log());
                }
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("flotilla up not ready in {within:?}:\n{}", self.log());
    }

    /// SIGKILL by our own pid, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    /// Starts it again with the same arguments (same port).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The pid of the running process (`None` while it is down).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's resident set size in KiB (`VmRSS` in `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// What the process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Posts a command; returns (HTTP status, reply JSON).
    pub fn send(&self, actor: &str, id: &str, body: &Value) -> (u16, Value) {
        post_json(&format!("{}/v1/cmd/{actor}/{id}", self.url), body, None)
    }

    /// Posts a command with an idempotency key.
    pub fn send_with_key(&self, actor: &str, id: &str, body: &Value, key: &str) -> (u16, Value) {
        post_json(
            &format!("{}/v1/cmd/{actor}/{id}", self.url),
            body,
            Some(key),
        )
    }

    /// GETs a path; returns (status, JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = http_client()
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }
}

impl Drop for FlotillaUp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The scheduler's queue `name` as its query answers it (asserting 200).
pub fn queue(up: &FlotillaUp, name: &str) -> Value {
    let (status, body) = up.get(&format!("/v1/query/scheduler/{name}"));
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

/// Polls queue `name` until `cond` holds and returns that view; panics
/// with the view and the log after `within`. A `503 UNAVAILABLE` counts as
/// not yet: a scheduler restarted on another address waits for the
/// control-plane lease its killed predecessor held to run out.
pub fn wait_for_queue(
    up: &FlotillaUp,
    name: &str,
    what: &str,
    within: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = up.get(&format!("/v1/query/scheduler/{name}"));
        assert!(
            status == 200 || status == 503,
            "queue {name}: {status} {body}"
        );
        let view = body["result"].clone();
        if status == 200 && cond(&view) {
            return view;
        }
        if Instant::now() > deadline {
            panic!("{what} not reached in {within:?}: {view:#}\n{}", up.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking HTTP client with a generous timeout.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs JSON; returns (status, JSON body).
pub fn post_json(url: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = http_client().post(url).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().expect("POST");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Parses JSON lines.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Polls `check` every 100 ms until it gives a value, or `None` after
/// `within`.
pub fn wait_until<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `flotilla agent --source sim` for `node` on the NATS server at
/// `url` (stderr in `log_dir/agent-<node>.log`), killed by its own pid on
/// drop. Faults are injected on `flotilla.faults.<node>` ([`publish_json`]).
pub struct SimAgent(Child);

impl SimAgent {
    /// Starts the agent, reporting every 200 ms.
    pub fn start(url: &str, node: &str, log_dir: &Path) -> SimAgent {
        let args = ["--nats", url, "--interval", "200ms", "--http", "off"];
        Self::spawn(node, &args, log_dir)
    }

    /// Starts `flotilla agent --node-id <node> --source sim <args>` (without
    /// `--nats` it writes its messages to stdout, which is dropped).
    pub fn spawn(node: &str, args: &[&str], log_dir: &Path) -> SimAgent {
        let log = std::fs::File::create(log_dir.join(format!("agent-{node}.log"))).unwrap();
        let child = Command::new(flotilla_bin())
            .args(["agent", "--node-id", node, "--source", "sim"])
            .args(args)
            .env_remove("FLOTILLA_NATS")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        SimAgent(child)
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an agent ([`SimAgent`]) for every node of pool `gpu` that waits
/// for one, until stopped; kills them (by their own pids) when dropped.
pub struct Agents {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<SimAgent>>>,
}

impl Agents {
    /// Follows pool `gpu` of the `flotilla up` at `up_url`; agents report to `nats`.
    pub fn follow(up_url: String, nats: String, log_dir: std::path::PathBuf) -> Agents {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut agents: std::collections::BTreeMap<String, SimAgent> = Default::default();
            let client = http_client();
            while !stopping.load(Ordering::Relaxed) {
                let view: Value = client
                    .get(format!("{up_url}/v1/query/provisioner/gpu"))
                    .send()
                    .and_then(|r| r.json())
                    .unwrap_or(Value::Null);
                for node in view["result"]["nodes"].as_array().into_iter().flatten() {
                    let id = node["node_id"].as_str().unwrap_or_default().to_string();
                    if node["status"] == "registering" && !agents.contains_key(&id) {
                        agents.insert(id.clone(), SimAgent::start(&nats, &id, &log_dir));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            agents.into_values().collect()
        });
        Agents {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            drop(thread.join());
        }
    }
}

/// Writes a pools file (`yaml`) into `dir`; its path, for `up --pools`.
pub fn pools_file(dir: &Path, yaml: &str) -> String {
    let path = dir.join("pools.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// Publishes `body` as JSON on `subject` of the NATS server at `url`.
pub fn publish_json(url: &str, subject: &str, body: Value) {
    use flotilla_bus::{Bus, Message};
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let bus = flotilla_bus::nats::NatsBus::connect(url).await.unwrap();
            bus.publish(Message::new(subject, serde_json::to_vec(&body).unwrap()))
                .await
                .unwrap();
            bus.flush().await.unwrap();
        });
}

/// Every node of a pool's view and its status.
pub fn node_statuses(pool: &Value) -> std::collections::BTreeMap<String, String> {
    pool["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let id = n["node_id"].as_str().unwrap_or_default().to_string();
            (id, n["status"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// The status of `node` in a pool's view (`absent` when it has none).
pub fn node_status(view: &Value, node: &str) -> String {
    view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node_id"] == node))
        .map_or("absent".into(), |n| {
            n["status"].as_str().unwrap_or("?").to_string()
        })
}
