//! End-to-end: a web page in the user's browser cannot drive the loopback
//! control plane or the worker's version routes (issue 11, defect 5). The
//! attack is what a browser sends: cross-origin "simple" POSTs
//! (`Content-Type: text/plain`, no preflight), and DNS rebinding (a foreign
//! `Host`). Each must be refused and change nothing; same-origin JSON and
//! curl-like requests without `Origin` still work.

use crate::support::inference::{model_init, predict_body, Worker};
use crate::support::{http_client, FlotillaUp};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const EVIL: &str = "http://evil.example";

/// POSTs `body` with a content type and extra headers: (status, JSON reply).
fn post(url: &str, body: &Value, content_type: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = http_client()
        .post(url)
        .header("Content-Type", content_type)
        .body(body.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().expect("POST");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// Asserts a refusal: the status and the typed error code.
fn assert_refused(reply: (u16, Value), status: u16, code: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["ok"], false, "{}", reply.1);
    assert_eq!(reply.1["error"]["code"], code, "{}", reply.1);
}

fn touch(marker: &Path) -> Value {
    json!(["sh", "-c", format!("touch {}", marker.display())])
}

#[test]
fn cross_origin_simple_posts_and_rebinding_cannot_configure_a_queue_or_run_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = FlotillaUp::start(
        &["--only", "scheduler", "--data-dir", data.to_str().unwrap()],
        dir.path(),
    );
    let cmd = format!("{}/v1/cmd/scheduler/q", up.url);
    let configure = json!({"type": "configure_queue", "concurrency": 1});

    // The attack: a form-like cross-origin POST, no preflight.
    let attack = post(&cmd, &configure, "text/plain", &[("Origin", EVIL)]);
    assert!(matches!(attack.0, 403 | 415), "{}", attack.1);
    assert_refused(
        post(&cmd, &configure, "text/plain", &[]),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    for simple in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        assert_refused(
            post(&cmd, &configure, simple, &[]),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        );
    }
    let no_type = http_client()
        .post(&cmd)
        .body(configure.to_string())
        .send()
        .unwrap();
    assert_eq!(
        no_type.status().as_u16(),
        415,
        "a command must say its type"
    );
    let json_type = "application/json";
    assert_refused(
        post(&cmd, &configure, json_type, &[("Origin", EVIL)]),
        403,
        "FORBIDDEN_ORIGIN",
    );
    // DNS rebinding: the page's own origin, with the attacker's name as Host.
    let rebound = [
        ("Host", "evil.example:8080"),
        ("Origin", "http://evil.example:8080"),
    ];
    assert_refused(
        post(&cmd, &configure, json_type, &rebound),
        403,
        "FORBIDDEN_HOST",
    );
    // The same, percent-encoded: the router decodes it to /v1/cmd/..., so
    // the guard must too.
    let encoded = format!("{}/%76%31/%63md/scheduler/q", up.url);
    assert_refused(
        post(&encoded, &configure, json_type, &rebound),
        403,
        "FORBIDDEN_HOST",
    );
    let (status, reply) = up.get("/v1/query/scheduler/q");
    assert_eq!(status, 404, "no attack created the queue: {reply}");

    // curl and the CLI send no Origin; a page served by the gateway sends its own.
    let (status, reply) = up.send("scheduler", "q", &configure);
    assert_eq!(status, 200, "{reply}");
    // Any `+json` type is JSON, as on the worker.
    let structured = format!("{}/v1/cmd/scheduler/q2", up.url);
    let (status, reply) = post(&structured, &configure, "application/vnd.api+json", &[]);
    assert_eq!(status, 200, "{reply}");
    let own = [("Origin", up.url.as_str())];
    let marker = dir.path().join("ran");
    let submit = json!({"type": "submit", "job_id": "pwn", "spec": {"command": touch(&marker)}});
    assert!(matches!(
        post(&cmd, &submit, "text/plain", &[("Origin", EVIL)]).0,
        403 | 415
    ));
    assert_refused(
        post(&cmd, &submit, json_type, &rebound),
        403,
        "FORBIDDEN_HOST",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!marker.exists(), "a refused submit ran its command");
    let (_, view) = up.get("/v1/query/scheduler/q");
    assert!(!view.to_string().contains("pwn"), "{view}");

    let submit = json!({"type": "submit", "job_id": "ok", "spec": {"command": touch(&marker)}});
    let (status, reply) = post(&cmd, &submit, "application/json; charset=utf-8", &own);
    assert_eq!(status, 200, "same-origin JSON is served: {reply}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the job never ran:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let localhost = up.url.replace("127.0.0.1", "localhost");
    let (status, _) = post(&cmd, &configure, json_type, &[("Host", &localhost[7..])]);
    assert_eq!(status, 200, "loopback names are allowed hosts");
}

#[test]
fn the_workers_version_routes_refuse_cross_origin_and_foreign_hosts() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    model_init(dir.path(), "v0.2.0", 1);
    let worker = Worker::start(dir.path(), &[], &[("MODEL_VERSION", "v0.1.0")]);
    let active = || worker.get("/versions").1["deployment"]["active"].clone();
    let before = active();
    let url = |path: &str| format!("{}{path}", worker.url);
    let empty = json!({});
    for path in [
        "/versions/v0.2.0/activate",
        "/versions/v0.2.0/load",
        "/versions/rollback",
        "/%76ersions/rollback",
    ] {
        let (status, body) = post(&url(path), &empty, "text/plain", &[("Origin", EVIL)]);
        assert!(matches!(status, 403 | 415), "{path}: {status} {body}");
        let (status, body) = post(&url(path), &empty, "text/plain", &[]);
        assert_eq!(status, 415, "{path}: {body}");
        let (status, body) = post(&url(path), &empty, "application/json", &[("Origin", EVIL)]);
        assert_eq!(
            status, 403,
            "{path}: CORS_ORIGINS=* does not open it: {body}"
        );
        let rebound = [("Host", "evil.example"), ("Origin", "http://evil.example")];
        let (status, body) = post(&url(path), &empty, "application/json", &rebound);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "INVALID_HOST", "{body}");
    }
    assert_eq!(active(), before, "no refused request switched versions");

    // /predict stays open to any origin with CarlaRL's CORS_ORIGINS=*.
    let r = http_client()
        .post(url("/predict"))
        .header("Origin", EVIL)
        .json(&predict_body(1, true))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Echoed with credentials, as CarlaRL does; the worker's auth is a
    // bearer token, which a browser never attaches by itself.
    assert_eq!(r.headers()["access-control-allow-origin"], EVIL);

    let own = [("Origin", worker.url.as_str())];
    let (status, body) = post(
        &url("/versions/v0.2.0/activate"),
        &empty,
        "application/json",
        &own,
    );
    assert_eq!(status, 200, "same-origin JSON is served: {body}");
    let r = http_client()
        .post(url("/versions/rollback"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "a bodiless curl -X POST is served");
    assert_eq!(active(), before);
}
