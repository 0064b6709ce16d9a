//! End-to-end over NATS: workers answer `flotilla.infer.<model>` in the
//! `flotilla-inference` queue group (JSON and MessagePack, CarlaRL's bodies
//! and error body), and a worker's versions are operated with plain NATS
//! commands on `flotilla.cmd.inference.<worker-id>`. A real nats-server is
//! started per test.

use crate::support::inference::{model_init, predict_body, sum_of, Worker};
use flotilla_bus::nats::NatsBus;
use flotilla_bus::testing::NatsServer;
use flotilla_bus::{Bus, Message};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A NATS request: (body, headers Status / Content-Type / X-Request-ID).
struct Answer {
    body: Vec<u8>,
    status: String,
    content_type: String,
    request_id: String,
}

fn request(
    bus: &NatsBus,
    rt: &tokio::runtime::Runtime,
    subject: &str,
    body: Vec<u8>,
    ct: Option<&str>,
) -> Answer {
    rt.block_on(async {
        let mut msg = Message::new(subject, body);
        if let Some(ct) = ct {
            msg = msg.with_header("Content-Type", ct);
        }
        let reply = bus
            .request(msg, Duration::from_secs(10))
            .await
            .expect("a reply");
        let h = |n: &str| reply.header(n).unwrap_or_default().to_string();
        Answer {
            status: h("Status"),
            content_type: h("Content-Type"),
            request_id: h("X-Request-ID"),
            body: reply.payload.to_vec(),
        }
    })
}

fn json_request(bus: &NatsBus, rt: &tokio::runtime::Runtime, subject: &str, body: &Value) -> Value {
    let a = request(bus, rt, subject, serde_json::to_vec(body).unwrap(), None);
    serde_json::from_slice(&a.body).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn served_requests(worker: &Worker) -> f64 {
    let text = worker.metrics();
    sum_of(
        &text,
        "carla_rl_inference_requests_total",
        &[("status", "success")],
    )
}

#[test]
fn workers_share_the_infer_subject_in_json_and_msgpack() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let nats = NatsServer::start();
    let url = nats.url();
    let a = Worker::start(dir.path(), &["--nats", &url], &[]);
    let b = Worker::start(dir.path(), &["--nats", &url], &[]);
    let rt = runtime();
    let bus = rt.block_on(NatsBus::connect(&url)).unwrap();
    let subject = "flotilla.infer.carla-ppo";

    for _ in 0..40 {
        let answer = request(
            &bus,
            &rt,
            subject,
            serde_json::to_vec(&predict_body(2, true)).unwrap(),
            None,
        );
        assert_eq!(answer.status, "200");
        assert_eq!(answer.content_type, "application/json");
        let reply: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(reply["version"], "v0.1.0");
        assert_eq!(reply["actions"].as_array().unwrap().len(), 2);
    }
    let (na, nb) = (served_requests(&a), served_requests(&b));
    assert_eq!(na + nb, 40.0);
    assert!(
        na > 0.0 && nb > 0.0,
        "the queue group shares the load: {na} / {nb}"
    );

    let packed = rmp_serde::to_vec_named(&predict_body(1, true)).unwrap();
    let answer = request(&bus, &rt, subject, packed, Some("application/msgpack"));
    assert_eq!(
        (answer.status.as_str(), answer.content_type.as_str()),
        ("200", "application/msgpack")
    );
    let reply: Value = rmp_serde::from_slice(&answer.body).unwrap();
    assert_eq!(reply["deterministic"], true);

    let answer = request(
        &bus,
        &rt,
        subject,
        br#"{"observations": []}"#.to_vec(),
        None,
    );
    assert_eq!(answer.status, "422");
    let error: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(error["error"], "VALIDATION_ERROR");
    assert_eq!(
        error["details"]["validation_errors"][0]["type"],
        "too_short"
    );
    assert_eq!(error["details"]["request_id"], answer.request_id.as_str());
}

#[test]
fn versions_are_operated_with_nats_commands() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    model_init(dir.path(), "v0.2.0", 1);
    let nats = NatsServer::start();
    let url = nats.url();
    let env = [("MODEL_VERSION", "v0.1.0")];
    let _w = Worker::start(dir.path(), &["--nats", &url, "--worker-id", "w1"], &env);
    let rt = runtime();
    let bus = rt.block_on(NatsBus::connect(&url)).unwrap();
    let cmd = "flotilla.cmd.inference.w1";

    let refused = json_request(&bus, &rt, cmd, &json!({"type": "roll_back"}));
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "INVALID_STATE");
    let refused = json_request(
        &bus,
        &rt,
        cmd,
        &json!({"type": "activate_version", "version": "v0.2.0"}),
    );
    assert_eq!(
        refused["error"]["code"], "INVALID_STATE",
        "not loaded yet: {refused}"
    );

    let loading = json_request(
        &bus,
        &rt,
        cmd,
        &json!({"type": "load_version", "version": "v0.2.0"}),
    );
    assert_eq!(loading["ok"], true, "{loading}");
    assert_eq!(loading["events"][0]["type"], "load_requested");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = json_request(&bus, &rt, "flotilla.query.inference.w1", &json!({}));
        if state["result"]["versions"]["v0.2.0"]["status"] == "loaded" {
            assert_eq!(state["result"]["active"], "v0.1.0");
            break;
        }
        assert!(Instant::now() < deadline, "v0.2.0 never loaded: {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let switched = json_request(
        &bus,
        &rt,
        cmd,
        &json!({"type": "activate_version", "version": "v0.2.0"}),
    );
    assert_eq!(
        switched["result"]["current_version"], "v0.2.0",
        "{switched}"
    );
    assert_eq!(switched["result"]["previous_version"], "v0.1.0");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = json_request(
            &bus,
            &rt,
            "flotilla.infer.carla-ppo",
            &predict_body(1, true),
        );
        if reply["version"] == "v0.2.0" {
            break;
        }
        assert!(Instant::now() < deadline, "traffic never moved: {reply}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = json_request(&bus, &rt, cmd, &json!({"type": "roll_back"}));
    assert_eq!(back["events"][0]["type"], "rolled_back", "{back}");
    assert_eq!(back["result"]["current_version"], "v0.1.0");
}
