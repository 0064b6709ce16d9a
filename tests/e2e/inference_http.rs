//! End-to-end: the real `flotilla worker` over HTTP on 127.0.0.1, as a
//! CarlaRL client sees it — every endpoint, every error code, the request
//! id header, a degraded start on a corrupt artifact, the bounded queue,
//! CORS and allowed hosts, and version switches under load without a
//! failed request.

use crate::support::inference::{
    first_error, header, model_init, observation, predict_body, Worker,
};
use crate::support::{flotilla, http_client};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn predict_answers_like_carla_rl_with_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let worker = Worker::start(dir.path(), &[], &[]);
    let r = http_client()
        .post(format!("{}/predict", worker.url))
        .header("X-Request-ID", "trace-42")
        .json(&predict_body(2, true))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-request-id"), "trace-42");
    assert!(header(&r, "x-process-time").parse::<f64>().unwrap() >= 0.0);
    let body: Value = r.json().unwrap();
    assert_eq!(body["version"], "v0.1.0");
    assert_eq!(body["deterministic"], true);
    assert!(body["timingMs"].as_f64().unwrap() > 0.0);
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(
        actions[0], actions[1],
        "deterministic means the mean action"
    );
    assert_eq!(
        actions[0]["brake"], 0.0,
        "the example's output bias keeps brake at 0"
    );

    // Sampling: same seed, same sample; always inside the action space.
    let seeded = json!({"observations": [observation()], "deterministic": false, "seed": 7});
    let (s1, a, _) = worker.post("/predict", &seeded);
    let (s2, b, _) = worker.post("/predict", &seeded);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(a["actions"], b["actions"]);
    assert_eq!(a["deterministic"], false);
    let (_, unseeded, id) = worker.post("/predict", &predict_body(50, false));
    assert!(!id.is_empty(), "a request id is made up when none is sent");
    for act in unseeded["actions"].as_array().unwrap() {
        let t = act["throttle"].as_f64().unwrap();
        let s = act["steer"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&t) && (-1.0..=1.0).contains(&s),
            "{act}"
        );
    }

    // MessagePack in, MessagePack out.
    let packed = rmp_serde::to_vec_named(&predict_body(1, true)).unwrap();
    let r = http_client()
        .post(format!("{}/predict", worker.url))
        .header("Content-Type", "application/msgpack")
        .body(packed)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let reply: Value = rmp_serde::from_slice(&r.bytes().unwrap()).unwrap();
    for key in ["throttle", "brake", "steer"] {
        let (a, b) = (
            reply["actions"][0][key].as_f64().unwrap(),
            actions[0][key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-6, "{key}: {a} vs {b}");
    }
}

#[test]
fn every_endpoint_answers_and_metrics_use_carla_names() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let worker = Worker::start(dir.path(), &[], &[]);
    let (s, health) = worker.get("/healthz");
    assert_eq!(s, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], "v0.1.0");
    assert_eq!(health["device"], "cpu");
    assert!(health["git"].is_string() && health["timestamp"].as_f64().unwrap() > 1e9);
    let (s, ready) = worker.get("/readyz");
    assert_eq!((s, ready["status"].as_str()), (200, Some("ready")));
    let (s, meta) = worker.get("/metadata");
    assert_eq!(s, 200);
    assert_eq!(meta["modelName"], "carla-ppo");
    assert_eq!(meta["inputShape"], json!([5]));
    assert_eq!(meta["actionSpace"]["steer"], json!([-1.0, 1.0]));
    let (s, warm, _) = worker.post("/warmup", &json!({}));
    assert_eq!((s, warm["status"].as_str()), (200, Some("warmed")));
    assert!(warm["timingMs"].as_f64().unwrap() >= 0.0);
    let (s, versions) = worker.get("/versions");
    assert_eq!(s, 200);
    assert_eq!(versions["current_version"], "v0.1.0");
    assert_eq!(versions["selection_strategy"], "latest_stable");
    let v = &versions["available_versions"][0];
    assert_eq!(
        (v["is_stable"].as_bool(), v["is_current"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(v["model_card"]["model_name"], "carla-ppo");
    worker.post("/predict", &predict_body(1, true));
    let text = http_client()
        .get(format!("{}/metrics", worker.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "carla_rl_inference_duration_seconds_bucket",
        "carla_rl_request_duration_seconds_count",
        "carla_rl_model_loaded{device=\"cpu\",model_version=\"v0.1.0\"} 1",
        "carla_rl_model_warmed_up{model_version=\"v0.1.0\"} 1",
        "carla_rl_service_uptime_seconds",
        "http_request_duration_seconds_bucket{endpoint=\"/predict\"",
        "flotilla_inference_batch_rows",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}

/// Asserts an error response: status, code, and request id in header and body.
fn assert_error(resp: (u16, Value, String), status: u16, code: &str) -> Value {
    let (s, body, id) = resp;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["details"]["request_id"], id.as_str());
    assert!(body["timestamp"].as_f64().unwrap() > 1e9);
    body
}

#[test]
fn bad_input_gets_the_right_code_and_the_worker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let worker = Worker::start(dir.path(), &["--max-body-bytes", "200000"], &[]);
    let post_raw = |b: &[u8]| worker.post_raw("/predict", b.to_vec(), "application/json");

    let body = assert_error(post_raw(b"{\"observations\": ["), 422, "VALIDATION_ERROR");
    assert_eq!(
        first_error(&body),
        ("body.18".into(), "json_invalid".into())
    );
    let body = assert_error(
        worker.post("/predict", &json!({"observations": []})),
        422,
        "VALIDATION_ERROR",
    );
    assert_eq!(
        first_error(&body),
        ("body.observations".into(), "too_short".into())
    );
    let body = assert_error(
        worker.post("/predict", &predict_body(1001, true)),
        422,
        "VALIDATION_ERROR",
    );
    assert_eq!(first_error(&body).1, "too_long");
    let body = assert_error(
        post_raw(br#"{"observations": [{"speed": NaN, "steering": 0, "sensors": [1, 2, 3]}]}"#),
        422,
        "VALIDATION_ERROR",
    );
    assert_eq!(first_error(&body).1, "json_invalid");
    let bad_speed = json!({"observations": [{"speed": 250, "steering": 0, "sensors": [1, 2, 3]}]});
    let body = assert_error(worker.post("/predict", &bad_speed), 422, "VALIDATION_ERROR");
    assert_eq!(
        first_error(&body),
        ("body.observations.0.speed".into(), "less_than_equal".into())
    );
    let bad_sensor =
        json!({"observations": [{"speed": 1, "steering": 0, "sensors": [1, 2, 1001]}]});
    let body = assert_error(
        worker.post("/predict", &bad_sensor),
        422,
        "VALIDATION_ERROR",
    );
    assert_eq!(
        first_error(&body),
        ("body.observations.0.sensors".into(), "value_error".into())
    );
    let missing = json!({"observations": [{"speed": 1, "sensors": [1, 2, 3]}]});
    let body = assert_error(worker.post("/predict", &missing), 422, "VALIDATION_ERROR");
    assert_eq!(
        first_error(&body),
        ("body.observations.0.steering".into(), "missing".into())
    );
    let five = json!({"observations": [observation(), {"speed": 1, "steering": 0, "sensors": [1, 2, 3, 4, 5]}]});
    let body = assert_error(worker.post("/predict", &five), 422, "VALIDATION_ERROR");
    assert_eq!(
        first_error(&body),
        ("body.observations.1.sensors".into(), "sensor_count".into())
    );
    let big = vec![b' '; 300_000];
    let body = assert_error(post_raw(&big), 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(body["details"]["max_body_bytes"], 200000);
    assert_error(worker.post("/nowhere", &json!({})), 404, "NOT_FOUND");
    assert_error(
        worker.post("/healthz", &json!({})),
        405,
        "METHOD_NOT_ALLOWED",
    );
    let put = http_client()
        .put(format!("{}/predict", worker.url))
        .send()
        .unwrap();
    assert_eq!(
        (put.status().as_u16(), header(&put, "allow").as_str()),
        (405, "POST"),
        "a 405 says what is allowed"
    );

    let (s, ok, _) = worker.post("/predict", &predict_body(3, true));
    assert_eq!(s, 200, "the worker keeps serving: {ok}");
    let text = http_client()
        .get(format!("{}/metrics", worker.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains(
            "carla_rl_errors_total{endpoint=\"/predict\",error_type=\"VALIDATION_ERROR\",model_version=\"v0.1.0\"} 8"
        ),
        "{text}"
    );
}

#[test]
fn a_corrupt_artifact_starts_degraded_until_a_good_version_is_activated() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = model_init(dir.path(), "v0.1.0", 0);
    let mut weights = std::fs::read(v1.join("model.safetensors")).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 0x55;
    std::fs::write(v1.join("model.safetensors"), weights).unwrap();
    let mut worker = Worker::start_degraded(dir.path(), &[], &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (s, health) = worker.get("/healthz");
    assert_eq!((s, health["status"].as_str()), (200, Some("degraded")));
    assert_eq!(
        health["version"], "unknown",
        "a string, as CarlaRL's schema types it, even with no model"
    );
    let (s, ready) = worker.get("/readyz");
    assert_eq!(
        (s, ready["error"].as_str()),
        (503, Some("SERVICE_UNAVAILABLE"))
    );
    let body = assert_error(
        worker.post("/predict", &predict_body(1, true)),
        503,
        "SERVICE_UNAVAILABLE",
    );
    assert_eq!(body["details"]["model_loaded"], false);
    let body = assert_error(
        worker.post("/predict", &json!({"observations": []})),
        422,
        "VALIDATION_ERROR",
    );
    assert_eq!(
        first_error(&body).1,
        "too_short",
        "the body is checked before the model"
    );
    let (s, meta) = worker.get("/metadata");
    assert_eq!(
        (s, meta["error"].as_str()),
        (503, Some("SERVICE_UNAVAILABLE"))
    );
    assert_error(
        worker.post("/warmup", &json!({})),
        503,
        "SERVICE_UNAVAILABLE",
    );
    let body = assert_error(
        worker.post("/versions/v0.1.0/load", &json!({})),
        422,
        "ARTIFACT_VALIDATION_ERROR",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch"),
        "{body}"
    );
    // No such folder is the caller's mistake, not the server's: 404.
    assert_error(
        worker.post("/versions/v9.9.9/load", &json!({})),
        404,
        "NOT_FOUND",
    );
    assert_error(
        worker.post("/versions/rollback", &json!({})),
        422,
        "VALIDATION_ERROR",
    );
    let (_, versions) = worker.get("/versions");
    let record = &versions["deployment"]["versions"]["v0.1.0"];
    assert_eq!(record["status"], "failed", "{versions}");
    assert_eq!(record["code"], "ARTIFACT_VALIDATION_ERROR");

    model_init(dir.path(), "v0.2.0", 1);
    let (s, switched, _) = worker.post("/versions/v0.2.0/activate", &json!({}));
    assert_eq!(s, 200, "{switched}");
    assert_eq!(switched["current_version"], "v0.2.0");
    worker.wait_for("/readyz");
    let (s, body, _) = worker.post("/predict", &predict_body(1, true));
    assert_eq!((s, body["version"].as_str()), (200, Some("v0.2.0")));
}

#[test]
fn a_full_queue_answers_429_and_nothing_else_fails() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let args = [
        "--queue-capacity",
        "1",
        "--max-batch-size",
        "1000",
        "--workers",
        "2",
    ];
    let worker = Worker::start(dir.path(), &args, &[]);
    let big = serde_json::to_vec(&predict_body(1000, false)).unwrap();
    let statuses: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..48)
            .map(|_| {
                let (url, big) = (worker.url.clone(), big.clone());
                s.spawn(move || {
                    let r = http_client()
                        .post(format!("{url}/predict"))
                        .header("Content-Type", "application/json")
                        .body(big)
                        .send()
                        .unwrap();
                    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<&Value> = statuses
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, b)| b)
        .collect();
    assert!(!refused.is_empty(), "no request was refused: {statuses:?}");
    assert_eq!(refused[0]["error"], "RESOURCE_EXHAUSTED");
    assert_eq!(refused[0]["details"]["queue_capacity"], 1);
    assert!(statuses.iter().all(|(s, _)| *s == 200 || *s == 429));
    let (s, _, _) = worker.post("/predict", &predict_body(1, true));
    assert_eq!(s, 200);
}

#[test]
fn cors_origins_and_allowed_hosts_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let env = [
        ("CORS_ORIGINS", "https://app.example"),
        ("ALLOWED_HOSTS", "127.0.0.1,*.fleet.example"),
    ];
    let worker = Worker::start(dir.path(), &[], &env);
    let client = http_client();
    let get = |host: Option<&str>, origin: Option<&str>| {
        let mut req = client.get(format!("{}/healthz", worker.url));
        if let Some(h) = host {
            req = req.header("Host", h);
        }
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send().unwrap()
    };
    let r = get(None, Some("https://app.example"));
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), "true");
    assert!(header(&r, "vary").contains("Origin"));
    let r = get(None, Some("https://evil.example"));
    assert_eq!(header(&r, "access-control-allow-origin"), "");
    assert_eq!(get(Some("api.fleet.example"), None).status(), 200);
    let r = get(Some("evil.example"), None);
    assert_eq!(r.status(), 400);
    let id = header(&r, "x-request-id");
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"], "INVALID_HOST");
    assert_eq!(body["details"]["request_id"], id.as_str());
    let pre = client
        .request(reqwest::Method::OPTIONS, format!("{}/predict", worker.url))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .unwrap();
    assert_eq!(pre.status(), 200);
    assert!(header(&pre, "access-control-allow-methods").contains("POST"));
    assert_eq!(
        header(&pre, "access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(header(&pre, "access-control-allow-credentials"), "true");
}

#[test]
fn with_any_origin_allowed_the_origin_is_echoed_with_credentials_as_carlarl_does() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let worker = Worker::start(dir.path(), &[], &[("CORS_ORIGINS", "*")]);
    let pre = http_client()
        .request(reqwest::Method::OPTIONS, format!("{}/predict", worker.url))
        .header("Origin", "https://dash.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .unwrap();
    assert_eq!(pre.status(), 200);
    assert_eq!(
        header(&pre, "access-control-allow-origin"),
        "https://dash.example",
        "never `*` with credentials"
    );
    assert_eq!(header(&pre, "access-control-allow-credentials"), "true");
}

#[test]
fn version_switches_under_load_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    model_init(dir.path(), "v0.2.0", 1);
    let worker = Worker::start(
        dir.path(),
        &["--workers", "2"],
        &[("MODEL_VERSION", "v0.1.0")],
    );
    let (_, versions) = worker.get("/versions");
    assert_eq!(
        versions["selection_strategy"],
        "pinned: MODEL_VERSION=v0.1.0"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = std::thread::scope(|s| {
        let load: Vec<_> = (0..6)
            .map(|_| {
                let (url, stop) = (worker.url.clone(), stop.clone());
                s.spawn(move || {
                    let client = http_client();
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let r = client
                            .post(format!("{url}/predict"))
                            .json(&predict_body(4, true))
                            .send();
                        let outcome = match r {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let v: Value = r.json().unwrap_or(Value::Null);
                                (status, v["version"].as_str().unwrap_or("").to_string())
                            }
                            Err(e) => (0, e.to_string()),
                        };
                        seen.push(outcome);
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        for path in [
            "/versions/v0.2.0/activate",
            "/versions/rollback",
            "/versions/v0.2.0/activate",
        ] {
            let (s, body, _) = worker.post(path, &json!({}));
            assert_eq!(s, 200, "{path}: {body}");
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        stop.store(true, Ordering::Relaxed);
        load.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let failed: Vec<_> = outcomes.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(outcomes.iter().any(|(_, v)| v == "v0.1.0"));
    assert!(outcomes.iter().any(|(_, v)| v == "v0.2.0"));
    let (_, health) = worker.get("/healthz");
    assert_eq!(health["version"], "v0.2.0");
}

#[test]
fn a_pytorch_state_dict_serves_the_same_actions_as_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 5);
    let out = flotilla(&[
        "model",
        "init",
        dir.path().to_str().unwrap(),
        "--version",
        "v0.2.0",
        "--seed",
        "5",
        "--format",
        "pytorch",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card = std::fs::read_to_string(dir.path().join("v0.2.0/model_card.yaml")).unwrap();
    assert!(
        card.contains("model.pt: sha256:") && card.contains("model_type: pytorch"),
        "{card}"
    );
    let worker = Worker::start(dir.path(), &[], &[]);
    let (_, st, _) = worker.post("/predict", &predict_body(1, true));
    assert_eq!(st["version"], "v0.2.0", "the newest stable version serves");
    let (s, _, _) = worker.post("/versions/v0.1.0/activate", &json!({}));
    assert_eq!(s, 200);
    let (_, pt, _) = worker.post("/predict", &predict_body(1, true));
    assert_eq!(pt["version"], "v0.1.0");
    assert_eq!(st["actions"], pt["actions"]);
}

#[test]
fn a_restarted_worker_serves_again_from_its_recorded_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    model_init(dir.path(), "v0.2.0", 1);
    let data_dir = data.path().to_str().unwrap();
    let args = ["--data-dir", data_dir, "--worker-id", "w1"];
    let worker = Worker::start(dir.path(), &args, &[("MODEL_VERSION", "v0.1.0")]);
    let (s, _, _) = worker.post("/versions/v0.2.0/activate", &json!({}));
    assert_eq!(s, 200);
    drop(worker);

    let worker = Worker::start(dir.path(), &args, &[]);
    let (s, body, _) = worker.post("/predict", &predict_body(1, true));
    assert_eq!(
        (s, body["version"].as_str()),
        (200, Some("v0.2.0")),
        "{body}"
    );
    let (s, back, _) = worker.post("/versions/rollback", &json!({}));
    assert_eq!(
        (s, back["current_version"].as_str()),
        (200, Some("v0.1.0")),
        "{back}"
    );
}
