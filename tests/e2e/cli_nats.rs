//! End-to-end on the NATS backend: `flotilla up --nats` against a real
//! nats-server (started and stopped by the test), commands as plain NATS
//! requests in JSON and MessagePack, two processes sharing one actor, and
//! the log tools reading JetStream.

use crate::support::{flotilla, json_lines, FlotillaUp};
use flotilla_bus::nats::NatsBus;
use flotilla_bus::testing::NatsServer;
use flotilla_bus::{Bus, Message};
use serde_json::{json, Value};
use std::time::Duration;

fn create() -> Value {
    json!({"type": "create_study", "seed": 5, "budget": 40, "bounds": {"x": {"min": 0, "max": 1}}})
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A NATS request from an ordinary client; returns the reply's body and content type.
fn request(
    url: &str,
    subject: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> (Vec<u8>, Option<String>) {
    runtime().block_on(async {
        let bus = NatsBus::connect(url).await.unwrap();
        let mut msg = Message::new(subject, body);
        if let Some(ct) = content_type {
            msg = msg.with_header("Content-Type", ct);
        }
        let reply = bus.request(msg, Duration::from_secs(10)).await.unwrap();
        let ct = reply.header("Content-Type").map(str::to_string);
        (reply.payload.to_vec(), ct)
    })
}

#[test]
fn commands_are_nats_requests_in_json_or_msgpack() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let _up = FlotillaUp::start(&["--nats", &url], dir.path());

    let (body, ct) = request(
        &url,
        "flotilla.cmd.solver.j",
        serde_json::to_vec(&create()).unwrap(),
        None,
    );
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(ct.as_deref(), Some("application/json"));

    let ask = rmp_serde::to_vec_named(&json!({"type": "ask", "n": 3})).unwrap();
    let (body, ct) = request(
        &url,
        "flotilla.cmd.solver.j",
        ask,
        Some("application/msgpack"),
    );
    assert_eq!(ct.as_deref(), Some("application/msgpack"));
    let reply: Value = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(reply["result"]["trials"].as_array().unwrap().len(), 3);

    let (body, _) = request(&url, "flotilla.cmd.solver.j", b"{oops".to_vec(), None);
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["error"]["code"], "MALFORMED_BODY");
    let (body, _) = request(&url, "flotilla.cmd.solver.j", vec![0xc1, 0xff], None);
    let reply: Value = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(reply["error"]["code"], "MALFORMED_BODY");

    let (body, _) = request(&url, "flotilla.query.solver.j", b"{}".to_vec(), None);
    let state: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(state["seq"], 2, "bad input appended nothing");
    let (body, _) = request(&url, "flotilla.query.solver", b"{}".to_vec(), None);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["result"]["ids"], json!(["j"]));

    let sent = flotilla(&["send", "solver", "j", r#"{"type": "stop"}"#, "--nats", &url]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let events = json_lines(&flotilla(&["events", "--nats", &url]).stdout);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["study_created", "trials_asked", "study_stopped"]);
    let audit = flotilla(&["audit", "--nats", &url]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let replay: Value = serde_json::from_slice(
        &flotilla(&["replay", "--stream", "solver/j", "--nats", &url]).stdout,
    )
    .unwrap();
    assert_eq!(replay["seq"], 3);
    assert_eq!(replay["state"]["status"], "stopped");
}

#[test]
fn two_processes_share_one_actor_without_handing_out_a_trial_twice() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let a = FlotillaUp::start(&["--nats", &url, "--only", "solver"], dir.path());
    let b = FlotillaUp::start(&["--nats", &url, "--only", "solver"], dir.path());
    assert_eq!(a.send("solver", "shared", &create()).0, 200);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let up = if i % 2 == 0 { &a } else { &b };
        let (status, reply) = up.send("solver", "shared", &json!({"type": "ask", "n": 2}));
        assert_eq!(status, 200, "{reply}");
        for t in reply["result"]["trials"].as_array().unwrap() {
            assert!(
                seen.insert(t["trial_id"].as_str().unwrap().to_string()),
                "duplicate {t}"
            );
        }
    }
    assert_eq!(seen.len(), 40);
    let (_, state) = b.get("/v1/query/solver/shared");
    assert_eq!(state["result"]["counts"]["asked"], 40);
    let audit = flotilla(&["audit", "--nats", &url]);
    assert!(audit.status.success());
}

/// A NATS URL's password never shows in an error (issue 11, defect 7):
/// before, `send` echoed `nats://alice:s3cret@…` in its failure.
#[test]
fn a_password_in_the_nats_url_is_never_printed() {
    let port = crate::support::free_port();
    let url = format!("nats://alice:s3cret@127.0.0.1:{port}");
    let out = flotilla(&["send", "solver", "j", r#"{"type": "stop"}"#, "--nats", &url]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alice:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
