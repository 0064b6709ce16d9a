//! HTTP authentication and roles on the three servers, against the real
//! processes: a tokens file made by `flotilla token create`, then for each
//! route × role the status the contract says (401 without or with an
//! unknown token, 403 naming the missing permission, else the handler's
//! own answer); the probes open; `/metrics` open or behind a token; the
//! refusal to listen beyond loopback without tokens (and the warning of
//! `--insecure-no-auth`); and the principal the gateway puts on the bus,
//! whatever `Flotilla-Principal` header the client sent.

use crate::support::inference::{model_init, predict_body, Worker};
use crate::support::{flotilla, flotilla_bin, free_port, http_client, FlotillaUp};
use flotilla_bus::nats::NatsBus;
use flotilla_bus::testing::NatsServer;
use flotilla_bus::Bus;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every role, in the contract's order.
pub const ROLES: [&str; 5] = ["admin", "operator", "viewer", "auditor", "inference"];

/// A tokens file with one token per role (named `<role>-user`); returns
/// the file and each role's token.
pub fn tokens_file(dir: &Path) -> (PathBuf, BTreeMap<&'static str, String>) {
    let path = dir.join("tokens.json");
    let tokens = ROLES
        .iter()
        .map(|role| {
            let name = format!("{role}-user");
            let out = flotilla(&[
                "token",
                "create",
                "--tokens",
                path.to_str().unwrap(),
                "--name",
                &name,
                "--role",
                role,
            ]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
            assert!(
                !stderr.contains(&token),
                "the token is printed on stdout only"
            );
            (*role, token)
        })
        .collect();
    (path, tokens)
}

/// One request: (status, JSON body or Null, headers).
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let client = http_client();
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().expect("HTTP request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

/// One row of a matrix: a route, the roles it admits (None: any valid
/// token), and what an admitted caller gets.
struct Route {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    admits: Option<&'static [&'static str]>,
    permission: &'static str,
    ok: u16,
}

/// Who the contract lets do what.
const COMMANDERS: &[&str] = &["admin", "operator"];
const READERS: &[&str] = &["admin", "operator", "viewer", "auditor"];
const INFERRERS: &[&str] = &["admin", "operator", "inference"];

/// How a server spells an error code in its body.
#[derive(Clone, Copy)]
enum Shape {
    /// `{"ok": false, "error": {"code"}, "missing_permission"}`.
    Reply,
    /// CarlaRL's `{"error": CODE, "details": {"missing_permission", "request_id"}}`.
    Serving,
}

fn code_of(shape: Shape, body: &Value) -> String {
    match shape {
        Shape::Reply => body["error"]["code"].as_str().unwrap_or("").to_string(),
        Shape::Serving => body["error"].as_str().unwrap_or("").to_string(),
    }
}

fn missing_of(shape: Shape, body: &Value) -> &Value {
    match shape {
        Shape::Reply => &body["missing_permission"],
        Shape::Serving => &body["details"]["missing_permission"],
    }
}

/// Runs the matrix: no token and an unknown one get 401, each role its
/// expected status; every failure is listed before the test fails.
fn check_matrix(base: &str, shape: Shape, tokens: &BTreeMap<&str, String>, routes: &[Route]) {
    let mut wrong = Vec::new();
    for route in routes {
        let url = format!("{base}{}", route.path);
        for bad in [None, Some("flt_not-a-token")] {
            let (status, body, headers) = call(route.method, &url, bad, route.body.as_ref());
            let challenge = headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if status != 401
                || code_of(shape, &body) != "UNAUTHENTICATED"
                || challenge != "Bearer realm=\"flotilla\""
            {
                wrong.push(format!(
                    "{} {} token {bad:?}: {status} {body} ({challenge})",
                    route.method, route.path
                ));
            }
        }
        for role in ROLES {
            let admitted = route.admits.is_none_or(|roles| roles.contains(&role));
            let expected = if admitted { route.ok } else { 403 };
            let (status, body, _) =
                call(route.method, &url, Some(&tokens[role]), route.body.as_ref());
            let refused_right = admitted
                || (code_of(shape, &body) == "FORBIDDEN"
                    && *missing_of(shape, &body) == json!(route.permission));
            if status != expected || !refused_right {
                wrong.push(format!(
                    "{} {} as {role}: expected {expected}, got {status} {body}",
                    route.method, route.path
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn assert_open(base: &str, paths: &[&str]) {
    for path in paths {
        let (status, body, _) = call("GET", &format!("{base}{path}"), None, None);
        assert_eq!(status, 200, "{path} without a token: {body}");
    }
}

#[test]
fn the_gateway_answers_401_403_or_the_handler_per_route_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path());
    let up = FlotillaUp::start(&["--tokens", file.to_str().unwrap()], dir.path());
    let create = json!({"type": "create_study", "seed": 1, "budget": 10,
        "bounds": {"x": {"min": 0, "max": 1}}});
    let (status, reply, _) = call(
        "POST",
        &format!("{}/v1/cmd/solver/s1", up.url),
        Some(&tokens["operator"]),
        Some(&create),
    );
    assert_eq!(status, 200, "{reply}");
    let ask = json!({"type": "ask", "n": 1});
    let routes = [
        Route {
            method: "POST",
            path: "/v1/cmd/solver/s1",
            body: Some(ask),
            admits: Some(COMMANDERS),
            permission: "command",
            ok: 200,
        },
        // Percent-encoded, the path routes to the same handler: it must
        // need the same permission.
        Route {
            method: "POST",
            path: "/v1/%63md/solver/s1",
            body: Some(json!({"type": "ask", "n": 1})),
            admits: Some(COMMANDERS),
            permission: "command",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/%71uery/solver",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "POST",
            path: "/v1/cmd/solver/missing",
            body: Some(json!({"type": "ask"})),
            admits: Some(COMMANDERS),
            permission: "command",
            ok: 404,
        },
        Route {
            method: "GET",
            path: "/v1/query/solver",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/query/solver/s1",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/events",
            body: None,
            admits: Some(READERS),
            permission: "events",
            ok: 200,
        },
        // ArqonHPO's dashboard API: reads are queries, actions commands
        // (a rollback before any result is refused by the handler: 409).
        Route {
            method: "GET",
            path: "/v1/studies/s1/api/state",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/studies/s1/api/events?limit=5",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/%73tudies/s1/api/actions",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "POST",
            path: "/v1/studies/s1/api/actions",
            body: Some(json!({"action": "rollback"})),
            admits: Some(COMMANDERS),
            permission: "command",
            ok: 409,
        },
        Route {
            method: "POST",
            path: "/v1/%73tudies/s1/api/actions",
            body: Some(json!({"action": "rollback"})),
            admits: Some(COMMANDERS),
            permission: "command",
            ok: 409,
        },
        Route {
            method: "GET",
            path: "/v1/replay/solver/s1?seq=1",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/%72eplay/solver/s1",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/inference/workers",
            body: None,
            admits: Some(READERS),
            permission: "query",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/v1/nothing-here",
            body: None,
            admits: None,
            permission: "",
            ok: 404,
        },
    ];
    check_matrix(&up.url, Shape::Reply, &tokens, &routes);
    // The dashboard's page and files hold no data: open.
    assert_open(
        &up.url,
        &["/healthz", "/readyz", "/metrics", "/", "/dashboard/app.js"],
    );
}

#[test]
fn metrics_behind_a_token_admit_every_role_and_the_config_file_can_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path());
    let config = dir.path().join("flotilla.toml");
    let text = format!(
        "tokens_file = {:?}\nmetrics_auth = \"token\"\n",
        file.to_str().unwrap()
    );
    std::fs::write(&config, text).unwrap();
    let up = FlotillaUp::start(&["--config", config.to_str().unwrap()], dir.path());
    let metrics = [Route {
        method: "GET",
        path: "/metrics",
        body: None,
        admits: None,
        permission: "metrics",
        ok: 200,
    }];
    check_matrix(&up.url, Shape::Reply, &tokens, &metrics);
    assert_open(&up.url, &["/healthz", "/readyz"]);
}

#[test]
fn the_worker_answers_401_403_or_the_handler_per_route_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    model_init(&artifacts, "v1.0.0", 1);
    let (file, tokens) = tokens_file(dir.path());
    let worker = Worker::start(&artifacts, &["--tokens", file.to_str().unwrap()], &[]);
    let routes = [
        Route {
            method: "POST",
            path: "/predict",
            body: Some(predict_body(2, true)),
            admits: Some(INFERRERS),
            permission: "infer",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/metadata",
            body: None,
            admits: Some(INFERRERS),
            permission: "infer",
            ok: 200,
        },
        Route {
            method: "POST",
            path: "/warmup",
            body: None,
            admits: Some(INFERRERS),
            permission: "infer",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/versions",
            body: None,
            admits: Some(INFERRERS),
            permission: "infer",
            ok: 200,
        },
        Route {
            method: "POST",
            path: "/versions/v1.0.0/load",
            body: None,
            admits: Some(COMMANDERS),
            permission: "serve_admin",
            ok: 200,
        },
        Route {
            method: "POST",
            path: "/versions/v1.0.0/activate",
            body: None,
            admits: Some(COMMANDERS),
            permission: "serve_admin",
            ok: 200,
        },
        // Percent-encoded, the path routes to the same handler: it must
        // need the same permission.
        Route {
            method: "POST",
            path: "/%76ersions/v1.0.0/activate",
            body: None,
            admits: Some(COMMANDERS),
            permission: "serve_admin",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/nothing-here",
            body: None,
            admits: None,
            permission: "",
            ok: 404,
        },
    ];
    check_matrix(&worker.url, Shape::Serving, &tokens, &routes);
    assert_open(&worker.url, &["/healthz", "/readyz", "/metrics"]);
    let (_, body, headers) = call("GET", &format!("{}/metadata", worker.url), None, None);
    let id = headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(body["details"]["request_id"], id, "{body}");
}

/// A running `flotilla agent --source sim`; killed by its pid on drop.
struct Agent {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        let port = free_port();
        let log = dir.join(format!("agent-{port}.log"));
        let child = Command::new(flotilla_bin())
            .args([
                "agent",
                "--node-id",
                "n1",
                "--source",
                "sim",
                "--interval",
                "100ms",
            ])
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env_remove("FLOTILLA_NATS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn agent");
        let mut agent = Agent {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        agent.wait_for("/readyz");
        agent
    }

    fn wait_for(&mut self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "agent exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(r) = http_client().get(format!("{}{path}", self.url)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent {path} never answered 200");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_keeps_its_probes_open_and_the_rest_behind_agent_read() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path());
    let agent = Agent::start(
        dir.path(),
        &[
            "--tokens",
            file.to_str().unwrap(),
            "--metrics-auth",
            "token",
        ],
    );
    let routes = [
        Route {
            method: "GET",
            path: "/metrics",
            body: None,
            admits: None,
            permission: "metrics",
            ok: 200,
        },
        Route {
            method: "GET",
            path: "/status",
            body: None,
            admits: Some(READERS),
            permission: "agent_read",
            ok: 404,
        },
    ];
    check_matrix(&agent.url, Shape::Reply, &tokens, &routes);
    assert_open(&agent.url, &["/healthz", "/readyz"]);
}

/// Runs a server that must refuse to start; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(flotilla_bin())
        .args(args)
        .env_remove("FLOTILLA_TOKENS_FILE")
        .env_remove("FLOTILLA_INSECURE_NO_AUTH")
        .env_remove("FLOTILLA_NATS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    stderr
}

#[test]
fn no_server_listens_beyond_loopback_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    model_init(&artifacts, "v1.0.0", 1);
    let data = dir.path().join("data");
    // Nothing listens on these: each process stops before it binds.
    let port = free_port().to_string();
    let addr = format!("0.0.0.0:{port}");
    let cases: [Vec<&str>; 3] = [
        vec!["up", "--http", &addr, "--data-dir", data.to_str().unwrap()],
        vec![
            "worker",
            "--http",
            &addr,
            "--artifacts",
            artifacts.to_str().unwrap(),
        ],
        vec![
            "agent",
            "--node-id",
            "n1",
            "--source",
            "sim",
            "--http",
            &addr,
        ],
    ];
    for args in cases {
        let stderr = refused(&args);
        for needle in [addr.as_str(), "--tokens FILE", "--insecure-no-auth"] {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle} missing in {stderr}"
            );
        }
    }
    let missing = dir.path().join("no-such-tokens.json");
    let stderr = refused(&[
        "up",
        "--http",
        "127.0.0.1:1",
        "--data-dir",
        data.to_str().unwrap(),
        "--tokens",
        missing.to_str().unwrap(),
    ]);
    assert!(stderr.contains("no-such-tokens.json"), "{stderr}");
}

#[test]
fn insecure_no_auth_listens_beyond_loopback_and_warns_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("up.log");
    let mut child = Command::new(flotilla_bin())
        .args([
            "up",
            "--http",
            &format!("0.0.0.0:{port}"),
            "--insecure-no-auth",
        ])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .env_remove("FLOTILLA_NATS")
        .env_remove("FLOTILLA_TOKENS_FILE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("http://127.0.0.1:{port}");
    let ready = loop {
        if let Ok(r) = http_client().get(format!("{url}/readyz")).send() {
            if r.status().is_success() {
                break true;
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (status, body, _) = call("GET", &format!("{url}/v1/query/solver"), None, None);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ready, "{text}");
    assert_eq!(status, 200, "no auth: anyone may read: {body}");
    assert!(
        text.contains("WARN") && text.contains("WITHOUT authentication"),
        "{text}"
    );
}

#[test]
fn the_gateway_puts_the_tokens_name_on_the_bus_never_the_clients_header() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path());
    let (nats, open_nats) = (NatsServer::start(), NatsServer::start());
    let (url, open_url) = (nats.url(), open_nats.url());
    let tokens_arg = file.to_str().unwrap();
    let secured = FlotillaUp::start(
        &["--nats", &url, "--tokens", tokens_arg],
        &subdir(dir.path(), "a"),
    );
    let open = FlotillaUp::start(&["--nats", &open_url], &subdir(dir.path(), "b"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let bus = NatsBus::connect(&url).await.unwrap();
        let open_bus = NatsBus::connect(&open_url).await.unwrap();
        let mut secured_cmds = bus.subscribe("flotilla.cmd.>").await.unwrap();
        let mut open_cmds = open_bus.subscribe("flotilla.cmd.>").await.unwrap();
        bus.flush().await.unwrap();
        open_bus.flush().await.unwrap();
        let forged = |base: String, token: Option<String>| {
            tokio::task::spawn_blocking(move || {
                let mut req = http_client()
                    .post(format!("{base}/v1/cmd/solver/p1"))
                    .header("Flotilla-Principal", "mallory")
                    .json(&json!({"type": "ask"}));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                req.send().unwrap().status().as_u16()
            })
        };
        let a = forged(secured.url.clone(), Some(tokens["operator"].clone()))
            .await
            .unwrap();
        let b = forged(open.url.clone(), None).await.unwrap();
        let wait = Duration::from_secs(10);
        let x = tokio::time::timeout(wait, secured_cmds.next())
            .await
            .unwrap()
            .unwrap();
        let y = tokio::time::timeout(wait, open_cmds.next())
            .await
            .unwrap()
            .unwrap();
        (a, b, x, y)
    });
    let (a, b, secured_msg, open_msg) = seen;
    assert_eq!((a, b), (404, 404), "both reach the solver (no such study)");
    assert_eq!(
        secured_msg.header("Flotilla-Principal"),
        Some("operator-user")
    );
    assert_eq!(open_msg.header("Flotilla-Principal"), Some("anonymous"));
}

/// `dir/name`, created (each `up` writes its own log there).
fn subdir(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}

#[test]
fn bench_auth_prints_command_latency_with_and_without_tokens() {
    let out = flotilla(&["bench", "auth", "--commands", "20", "--warmup", "5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "| no auth (anonymous) |",
        "| bearer token + rate limit |",
        "auth adds",
    ] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
}

#[test]
fn the_clis_http_clients_present_flotilla_token() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path());
    let up = FlotillaUp::start(&["--tokens", file.to_str().unwrap()], dir.path());
    let send = |env: &[(&str, &str)]| {
        let out = Command::new(flotilla_bin())
            .args([
                "send",
                "solver",
                "s9",
                r#"{"type": "ask"}"#,
                "--http",
                &up.url,
            ])
            .env_remove("FLOTILLA_TOKEN")
            .env_remove("FLOTILLA_TOKEN_FILE")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    assert!(send(&[]).contains("UNAUTHENTICATED"));
    assert!(send(&[("FLOTILLA_TOKEN", &tokens["viewer"])]).contains("FORBIDDEN"));
    let token_file = dir.path().join("operator.token");
    std::fs::write(&token_file, format!("{}\n", tokens["operator"])).unwrap();
    let out = send(&[("FLOTILLA_TOKEN_FILE", token_file.to_str().unwrap())]);
    assert!(
        out.contains("NOT_FOUND") && !out.contains(&tokens["operator"]),
        "{out}"
    );
}
