//! The least-privilege configuration of `flotilla nats-config` (issue 12,
//! item 2) against a real nats-server started with it: the control plane
//! works end to end with only its permissions (the server logs no
//! violation of its key), an unauthenticated client is refused, the agent
//! of one node cannot publish another's health (so a forged report never
//! reaches the provisioner), an auditor can audit but not command, no
//! user but the control plane appends to `evt.>`, a worker serves only its
//! own deployment, and an inference client gets predictions but may not
//! command or serve.
//!
//! The server refusing a publish is seen in its log (`Publish Violation`);
//! NATS keeps one connection's messages in order, so what a connection
//! publishes after a refused message arrives after it would have.

use crate::support::nats_security::{flotilla_env, UpOverNats};
use crate::support::{flotilla, FlotillaUp};
use flotilla_bus::nats::{NatsAuth, NatsBus};
use flotilla_bus::testing::NatsServer;
use flotilla_bus::{Bus, Message};
use flotilla_messages::health::{HealthAction, HealthMessage, Verdict};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CREATE: &str =
    r#"{"type": "create_study", "seed": 1, "budget": 9, "bounds": {"x": {"min": 0, "max": 1}}}"#;
const ASK: &str = r#"{"type": "ask", "n": 1}"#;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `flotilla nats-config` into `dir` for `names` (`--agent gpu-1` …), and
/// a nats-server started with the configuration it wrote.
fn secured_server(dir: &Path, names: &[&str]) -> NatsServer {
    let out = flotilla(&[&["nats-config", "--out", dir.to_str().unwrap()], names].concat());
    assert!(out.status.success(), "nats-config: {}", stderr(&out));
    let conf = dir.join("nats-server.conf");
    NatsServer::start_with_args(&["-c", conf.to_str().unwrap()])
}

fn seed(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.nk")).display().to_string()
}

/// The public key `principals.toml` lists for `name`.
fn public_key(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join("principals.toml")).unwrap();
    let table: toml::Value = toml::from_str(&text).unwrap();
    table["principal"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["public_key"].as_str())
        .unwrap_or_else(|| panic!("{name} not in principals.toml:\n{text}"))
        .to_string()
}

fn server_log(nats: &NatsServer) -> String {
    std::fs::read_to_string(nats.store_dir().join("nats-server.log")).unwrap_or_default()
}

/// Waits until the server logs that it refused `public_key` a publish on
/// `subject`.
fn wait_for_refusal(nats: &NatsServer, public_key: &str, subject: &str) {
    let needle = format!("Publish Violation - Subject \"{subject}\"");
    wait_for_violation(nats, public_key, &needle);
}

/// Waits until the server logs a line naming `public_key` and `needle`.
fn wait_for_violation(nats: &NatsServer, public_key: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let log = server_log(nats);
        if log
            .lines()
            .any(|l| l.contains(public_key) && l.contains(needle))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {needle:?} logged:\n{}", server_log(nats));
}

/// A NATS connection as the user whose seed is `seed`, on its own runtime.
struct Client {
    rt: tokio::runtime::Runtime,
    bus: NatsBus,
    /// Subscriptions held, dropped inside the runtime (unsubscribing needs it).
    subscriptions: Vec<flotilla_bus::Subscription>,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        self.subscriptions.clear();
    }
}

impl Client {
    fn connect(url: &str, seed: &str) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let auth = NatsAuth {
            nkey_file: Some(PathBuf::from(seed)),
            ..NatsAuth::default()
        };
        let bus = rt.block_on(NatsBus::connect_with(url, &auth)).unwrap();
        Client {
            rt,
            bus,
            subscriptions: Vec::new(),
        }
    }

    /// Subscribes to `pattern` (and waits until the server has seen it).
    fn subscribe(&mut self, pattern: &str) {
        let sub = self.rt.block_on(async {
            let sub = self.bus.subscribe(pattern).await.unwrap();
            self.bus.flush().await.unwrap();
            sub
        });
        self.subscriptions.push(sub);
    }

    fn publish(&self, subject: &str, body: &[u8]) {
        self.rt.block_on(async {
            self.bus
                .publish(Message::new(subject, body.to_vec()))
                .await
                .unwrap();
            self.bus.flush().await.unwrap();
        });
    }

    /// A request on `subject` and its reply (taken on this user's own
    /// inbox), or the bus's error.
    fn request(&self, subject: &str, body: &[u8]) -> Result<Message, flotilla_bus::BusError> {
        self.rt.block_on(self.bus.request(
            Message::new(subject, body.to_vec()),
            Duration::from_secs(10),
        ))
    }

    /// Whether the events stream holds any message on `subject`.
    fn stored(&self, subject: &str) -> bool {
        self.rt.block_on(async {
            let js = async_nats::jetstream::new(self.bus.client());
            let stream = js.get_stream("FLOTILLA_EVENTS").await.unwrap();
            stream.direct_get_last_for_subject(subject).await.is_ok()
        })
    }
}

#[test]
fn the_control_plane_serves_an_operator_and_an_auditor_reads_but_cannot_command() {
    let dir = tempfile::tempdir().unwrap();
    let nats = secured_server(
        dir.path(),
        &[
            "--operator",
            "alice",
            "--auditor",
            "audit1",
            "--agent",
            "n1",
        ],
    );
    let url = nats.url();

    let anonymous = flotilla(&["audit", "--nats", &url]);
    assert_eq!(anonymous.status.code(), Some(2), "{}", stderr(&anonymous));
    assert!(
        stderr(&anonymous).contains("authorization violation")
            && stderr(&anonymous).contains("without credentials"),
        "an unauthenticated client is refused: {}",
        stderr(&anonymous)
    );

    // Snapshots every 2 events, so the snapshot bucket's API is used too.
    // Signed commands only, from the principals the config names.
    let control_plane = seed(dir.path(), "flotilla");
    let principals = dir.path().join("principals.toml").display().to_string();
    let up = UpOverNats::start(
        &[
            "--nats",
            &url,
            "--nats-nkey",
            &control_plane,
            "--snapshot-every",
            "2",
            "--principals",
            &principals,
            "--unsigned-commands",
            "refuse",
        ],
        &[],
        dir.path(),
    );
    let alice = seed(dir.path(), "alice");
    for (command, what) in [
        (CREATE, "create"),
        (ASK, "ask 1"),
        (ASK, "ask 2"),
        (ASK, "ask 3"),
    ] {
        let out = flotilla(&[
            "send",
            "solver",
            "guarded",
            command,
            "--nats",
            &url,
            "--nats-nkey",
            &alice,
        ]);
        assert!(
            out.status.success(),
            "{what}: {}\n{}\nup:\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out),
            up.log()
        );
    }

    let auditor = seed(dir.path(), "audit1");
    let audit = flotilla(&["audit", "--nats", &url, "--nats-nkey", &auditor]);
    assert!(
        audit.status.success(),
        "the auditor audits: {}",
        stderr(&audit)
    );
    let summary: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["events"].as_u64().unwrap() >= 4, "{summary}");
    assert_eq!(
        summary["principals"]["alice"], summary["events"],
        "every event is alice's, named by her key's signature: {summary}"
    );
    let events = flotilla(&["events", "--nats", &url, "--nats-nkey", &auditor]);
    assert!(events.status.success(), "{}", stderr(&events));

    let refused = flotilla(&[
        "send",
        "solver",
        "guarded",
        ASK,
        "--nats",
        &url,
        "--nats-nkey",
        &auditor,
        "--timeout",
        "3",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("permission denied")
            && stderr(&refused).contains("flotilla.cmd.solver.guarded"),
        "an auditor cannot send a command: {}",
        stderr(&refused)
    );

    // Replies are private: alice may not hear everyone's inboxes.
    let mut eavesdropper = Client::connect(&url, &alice);
    eavesdropper.subscribe("_INBOX.>");
    wait_for_violation(
        &nats,
        &public_key(dir.path(), "alice"),
        "Subscription Violation - Subject \"_INBOX.>\"",
    );

    // Everything above ran with the control plane's permissions only.
    let cp = public_key(dir.path(), "flotilla");
    let log = server_log(&nats);
    let violations: Vec<_> = log
        .lines()
        .filter(|l| l.contains(&cp) && l.contains("Violation"))
        .collect();
    assert!(
        violations.is_empty(),
        "the control plane was refused: {violations:#?}"
    );
}

/// A `flotilla agent` process, killed (by its own pid) on drop.
struct Agent(Child);

impl Agent {
    fn start(url: &str, node: &str, seed: &str, dir: &Path) -> Agent {
        let log = std::fs::File::create(dir.join(format!("agent-{node}.log"))).unwrap();
        let child = Command::new(crate::support::flotilla_bin())
            .args([
                "agent",
                "--node-id",
                node,
                "--nats",
                url,
                "--nats-nkey",
                seed,
            ])
            .args(["--source", "sim", "--interval", "200ms", "--http", "off"])
            .env_remove("FLOTILLA_NATS")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node_id"] == id))
        .unwrap_or(&Value::Null)
}

fn wait_for(up: &FlotillaUp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = up.get("/v1/query/provisioner/gpu").1["result"].clone();
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; pool: {view:#}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fatal_report(node_id: &str) -> Vec<u8> {
    let report = HealthMessage::Report {
        node_id: node_id.to_string(),
        at: chrono::Utc::now().timestamp_millis() as u64,
        verdict: Verdict::Unhealthy,
        action: HealthAction::Replace,
        reasons: vec!["forged_xid_79".to_string()],
        xids: vec![79],
    };
    serde_json::to_vec(&report).unwrap()
}

#[test]
fn an_agent_cannot_forge_another_nodes_health_and_only_the_control_plane_appends_events() {
    let dir = tempfile::tempdir().unwrap();
    let nats = secured_server(
        dir.path(),
        &[
            "--agent",
            "gpu-1",
            "--agent",
            "gpu-2",
            "--operator",
            "alice",
        ],
    );
    let url = nats.url();
    // One unhealthy report takes a node out; a long heartbeat timeout, so
    // only reports change a node here.
    let pools = dir.path().join("pools.yaml");
    std::fs::write(
        &pools,
        "providers:\n  cloud: {type: sim, auto_register: false}\npools:\n  gpu:\n    provider: cloud\n    \
         min_nodes: 2\n    max_nodes: 4\n    cooldown: 0s\n    health: {unhealthy_threshold: 1, \
         boot_grace: 0s, heartbeat_timeout: 600s}\n    replacement: {drain_mode: evict, \
         circuit_breaker: {max_replaced_percent: 100}}\n",
    )
    .unwrap();
    let control_plane = seed(dir.path(), "flotilla");
    let up = FlotillaUp::start(
        &[
            "--nats",
            &url,
            "--nats-nkey",
            &control_plane,
            "--only",
            "provisioner",
            "--pools",
            pools.to_str().unwrap(),
            "--tick",
            "200ms",
        ],
        dir.path(),
    );
    // gpu-2 runs a real agent; gpu-1's agent is a raw client with gpu-1's
    // seed, so that nothing but what it sends says anything of gpu-1.
    let _a2 = Agent::start(&url, "gpu-2", &seed(dir.path(), "gpu-2"), dir.path());
    let gpu1 = Client::connect(&url, &seed(dir.path(), "gpu-1"));
    let heartbeat = HealthMessage::Heartbeat {
        node_id: "gpu-1".into(),
        at: chrono::Utc::now().timestamp_millis() as u64,
        gpus: Vec::new(),
    };
    gpu1.publish(
        "flotilla.health.gpu-1",
        &serde_json::to_vec(&heartbeat).unwrap(),
    );
    wait_for(&up, "both agents to register their nodes", |v| {
        node(v, "gpu-1")["status"] == "active" && node(v, "gpu-2")["status"] == "active"
    });

    // gpu-1's key forges fatal reports for gpu-2: refused by the server.
    for _ in 0..3 {
        gpu1.publish("flotilla.health.gpu-2", &fatal_report("gpu-2"));
    }
    wait_for_refusal(
        &nats,
        &public_key(dir.path(), "gpu-1"),
        "flotilla.health.gpu-2",
    );
    // The same reports on its own subject land (so the forgery would have
    // worked), and land after the refused ones would have.
    for _ in 0..3 {
        gpu1.publish("flotilla.health.gpu-1", &fatal_report("gpu-1"));
    }
    let view = wait_for(&up, "gpu-1 taken out by its own report", |v| {
        node(v, "gpu-1")["status"] == "draining"
    });
    assert_eq!(node(&view, "gpu-2")["status"], "active", "{view:#}");
    assert_eq!(node(&view, "gpu-2")["consecutive_unhealthy"], 0, "{view:#}");
    assert!(
        !node(&view, "gpu-2").to_string().contains("forged_xid_79"),
        "the forged report never reached the provisioner: {view:#}"
    );

    // Neither an agent nor an operator appends to the log.
    let alice = Client::connect(&url, &seed(dir.path(), "alice"));
    let forged = br#"{"type": "created", "forged": true}"#;
    alice.publish("flotilla.evt.solver.forged", forged);
    gpu1.publish("flotilla.evt.solver.forged", forged);
    wait_for_refusal(
        &nats,
        &public_key(dir.path(), "alice"),
        "flotilla.evt.solver.forged",
    );
    wait_for_refusal(
        &nats,
        &public_key(dir.path(), "gpu-1"),
        "flotilla.evt.solver.forged",
    );
    let cp = Client::connect(&url, &control_plane);
    assert!(
        !cp.stored("flotilla.evt.solver.forged"),
        "no event from a non-control-plane user is stored"
    );
    assert!(
        cp.stored("flotilla.evt.provisioner.gpu"),
        "the control plane's are"
    );
    let audit = flotilla_env(
        &["audit", "--nats", &url, "--nats-nkey", &control_plane],
        &[],
    );
    assert!(audit.status.success(), "{}", stderr(&audit));
}

/// A server secured for worker `w1` and `names`, the control plane (it
/// creates the stream and the bucket; a worker may not), and `w1` serving
/// v0.1.0 of the example model (v0.2.0 beside it) with only its own seed,
/// taking signed commands only.
struct ServedByW1 {
    nats: NatsServer,
    worker: crate::support::inference::Worker,
    _up: UpOverNats,
}

impl ServedByW1 {
    fn start(dir: &Path, names: &[&str]) -> ServedByW1 {
        use crate::support::inference::{model_init, Worker};
        let artifacts = dir.join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        model_init(&artifacts, "v0.1.0", 0);
        model_init(&artifacts, "v0.2.0", 1);
        let nats = secured_server(dir, &[&["--worker", "w1"], names].concat());
        let url = nats.url();
        let up = UpOverNats::start(
            &["--nats", &url, "--nats-nkey", &seed(dir, "flotilla")],
            &[],
            dir,
        );
        let principals = dir.join("principals.toml").display().to_string();
        let worker = Worker::start(
            &artifacts,
            &[
                "--nats",
                &url,
                "--nats-nkey",
                &seed(dir, "w1"),
                "--worker-id",
                "w1",
                "--principals",
                &principals,
                "--unsigned-commands",
                "refuse",
            ],
            &[("MODEL_VERSION", "v0.1.0")],
        );
        ServedByW1 {
            nats,
            worker,
            _up: up,
        }
    }
}

/// The server's log lines that refuse the user `public_key` anything.
fn violations_of(nats: &NatsServer, public_key: &str) -> Vec<String> {
    server_log(nats)
        .lines()
        .filter(|l| l.contains(public_key) && l.contains("Violation"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_worker_serves_its_own_deployment_with_only_its_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let ServedByW1 { nats, worker, _up } = ServedByW1::start(dir.path(), &["--operator", "alice"]);
    let url = nats.url();
    let alice = seed(dir.path(), "alice");
    let load = r#"{"type": "load_version", "version": "v0.2.0"}"#;
    let out = flotilla(&[
        "send",
        "inference",
        "w1",
        load,
        "--nats",
        &url,
        "--nats-nkey",
        &alice,
    ]);
    assert!(
        out.status.success(),
        "{}\n{}\nworker:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        worker.log()
    );
    let loaded = flotilla(&[
        "events",
        "--nats",
        &url,
        "--nats-nkey",
        &seed(dir.path(), "flotilla"),
        "--stream",
        "inference/w1",
        "--principal",
        "alice",
    ]);
    assert!(
        !crate::support::json_lines(&loaded.stdout).is_empty(),
        "the worker records alice's signed command as hers: {}",
        stderr(&loaded)
    );
    // w1 serves only its own deployment's subjects.
    let other = flotilla(&[
        "send",
        "inference",
        "w2",
        load,
        "--nats",
        &url,
        "--nats-nkey",
        &alice,
        "--timeout",
        "3",
    ]);
    assert_eq!(other.status.code(), Some(2), "{}", stderr(&other));
    assert!(
        stderr(&other).contains("no responders"),
        "{}",
        stderr(&other)
    );

    let violations = violations_of(&nats, &public_key(dir.path(), "w1"));
    assert!(
        violations.is_empty(),
        "the worker was refused: {violations:#?}"
    );
}

#[test]
fn an_inference_client_gets_predictions_and_may_not_command() {
    use crate::support::inference::predict_body;
    let dir = tempfile::tempdir().unwrap();
    let fleet = ServedByW1::start(dir.path(), &["--inference-client", "car1"]);
    let mut car1 = Client::connect(&fleet.nats.url(), &seed(dir.path(), "car1"));
    let key = public_key(dir.path(), "car1");

    let body = serde_json::to_vec(&predict_body(2, true)).unwrap();
    let reply = car1
        .request("flotilla.infer.carla-ppo", &body)
        .unwrap_or_else(|e| panic!("car1's request: {e}\nworker:\n{}", fleet.worker.log()));
    assert_eq!(reply.header("Status"), Some("200"));
    let prediction: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(prediction["version"], "v0.1.0", "{prediction}");
    assert_eq!(prediction["actions"].as_array().unwrap().len(), 2);
    assert!(
        violations_of(&fleet.nats, &key).is_empty(),
        "a request and its reply on car1's own inbox are allowed"
    );

    // Anything but a prediction is refused by the server.
    car1.publish("flotilla.cmd.solver.x", ASK.as_bytes());
    wait_for_refusal(&fleet.nats, &key, "flotilla.cmd.solver.x");
    // Nor may it pose as a worker and take others' requests.
    car1.subscribe("flotilla.infer.>");
    wait_for_violation(
        &fleet.nats,
        &key,
        "Subscription Violation - Subject \"flotilla.infer.>\"",
    );
}
