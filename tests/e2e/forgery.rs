//! Tamper evidence against someone who can write the log (issue 11, defect
//! 6). The checksum and hash chain have no key, so before, an event
//! published straight onto a study's JetStream subject with a valid checksum
//! and chain was served and passed `audit`. Now the control plane signs what
//! it appends: `audit --verify-key` names the forged events and `up` answers
//! `CORRUPT` for their studies. Likewise a purged subject or a deleted
//! message left no trace that `audit` saw; now it reports the log positions
//! that were removed, on both backends.

use crate::support::{flotilla, FlotillaUp};
use flotilla_bus::nats::{NatsBus, BATCH_BASE_HEADER, BATCH_END_HEADER, SEQ_HEADER, STREAM_NAME};
use flotilla_bus::testing::NatsServer;
use flotilla_messages::Envelope;
use serde_json::{json, Value};

fn create() -> Value {
    json!({"type": "create_study", "seed": 4, "budget": 10, "bounds": {"x": {"min": 0, "max": 1}}})
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Appends to `study` a copy of its last event, re-sealed after it (a valid
/// checksum and chain, the headers a genuine append carries), signed with
/// the last event's signature (`reuse_signature`) or unsigned.
fn forge_next_event(url: &str, study: &str, reuse_signature: bool) {
    runtime().block_on(async {
        let bus = NatsBus::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(bus.client());
        let stream = js.get_stream(STREAM_NAME).await.unwrap();
        let subject = format!("flotilla.evt.solver.{study}");
        let last = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .unwrap();
        let mut env: Envelope = serde_json::from_slice(&last.payload).unwrap();
        env.id = uuid::Uuid::new_v4().to_string();
        env.seq += 1;
        env.prev_hash = env.checksum.clone();
        env.checksum = env.compute_checksum();
        if !reuse_signature {
            env.signature = None;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.as_str());
        headers.insert(SEQ_HEADER, env.seq.to_string().as_str());
        headers.insert(BATCH_END_HEADER, env.seq.to_string().as_str());
        headers.insert(BATCH_BASE_HEADER, last.sequence.to_string().as_str());
        let body = serde_json::to_vec(&env).unwrap();
        js.publish_with_headers(subject, headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

/// A JetStream API request (`$JS.API.<api>`) from an ordinary client.
fn jetstream_api(url: &str, api: &str, body: Value) -> Value {
    runtime().block_on(async {
        let bus = NatsBus::connect(url).await.unwrap();
        let reply = bus
            .client()
            .request(
                format!("$JS.API.{api}"),
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    })
}

/// The JetStream sequence of `study`'s last event.
fn last_sequence(url: &str, study: &str) -> u64 {
    runtime().block_on(async {
        let bus = NatsBus::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(bus.client());
        let stream = js.get_stream(STREAM_NAME).await.unwrap();
        let subject = format!("flotilla.evt.solver.{study}");
        stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .unwrap()
            .sequence
    })
}

/// The (stream, seq, message) of every error `audit` reports.
fn audit_errors(args: &[&str]) -> (Option<i32>, Value, Vec<(String, u64, String)>) {
    let out = flotilla(args);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = summary["errors"].as_array().cloned().unwrap_or_default();
    let errors = errors
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().unwrap_or("").to_string(),
                e["seq"].as_u64().unwrap_or(0),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (out.status.code(), summary, errors)
}

#[test]
fn an_event_forged_on_jetstream_is_named_by_audit_and_refused_by_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("control-plane.key");
    let public = dir.path().join("control-plane.key.pub");
    let nats = NatsServer::start();
    let url = nats.url();
    let key_arg = key.display().to_string();
    let mut up = FlotillaUp::start(&["--nats", &url, "--signing-key", &key_arg], dir.path());
    for id in ["honest", "unsigned", "resigned"] {
        assert_eq!(up.send("solver", id, &create()).0, 200);
        assert_eq!(up.send("solver", id, &json!({"type": "ask"})).0, 200);
    }
    up.terminate();
    forge_next_event(&url, "unsigned", false);
    forge_next_event(&url, "resigned", true);

    // Without the public key (all that existed before), the forgeries pass.
    let (code, summary, _) = audit_errors(&["audit", "--nats", &url]);
    assert_eq!(
        (code, &summary["signatures_checked"]),
        (Some(0), &json!(false)),
        "{summary}"
    );

    let public_arg = public.display().to_string();
    let (code, summary, errors) =
        audit_errors(&["audit", "--nats", &url, "--verify-key", &public_arg]);
    assert_eq!(code, Some(1), "{summary}");
    let found: Vec<(&str, u64)> = errors.iter().map(|(s, q, _)| (s.as_str(), *q)).collect();
    assert_eq!(
        found,
        [("solver/resigned", 3), ("solver/unsigned", 3)],
        "{summary}"
    );
    assert!(errors[0].2.contains("signature invalid"), "{summary}");
    assert!(
        errors[1].2.contains("unsigned event after signed ones"),
        "{summary}"
    );
    assert_eq!(summary["signed"], 6, "{summary}");

    up.restart();
    assert_eq!(up.send("solver", "honest", &json!({"type": "ask"})).0, 200);
    for id in ["unsigned", "resigned"] {
        let (_, reply) = up.send("solver", id, &json!({"type": "ask"}));
        assert_eq!(reply["error"]["code"], "CORRUPT", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("solver/{id} seq 3")), "{message}");
    }
}

/// Before, `audit` passed after a study's subject was purged (the study
/// vanished) and after a study's last event was deleted (its state rolled
/// back); now it reports the removed log positions.
#[test]
fn a_purged_subject_and_a_deleted_message_on_jetstream_are_reported_by_audit() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let mut up = FlotillaUp::start(&["--nats", &url], dir.path());
    for id in ["purged", "kept", "rolled-back"] {
        assert_eq!(up.send("solver", id, &create()).0, 200);
        assert_eq!(up.send("solver", id, &json!({"type": "ask"})).0, 200);
    }
    up.terminate();
    let (code, summary, _) = audit_errors(&["audit", "--nats", &url]);
    assert_eq!(
        (code, &summary["events"]),
        (Some(0), &json!(6)),
        "untouched: {summary}"
    );

    let api = format!("STREAM.PURGE.{STREAM_NAME}");
    let purged = jetstream_api(&url, &api, json!({"filter": "flotilla.evt.solver.purged"}));
    assert_eq!(purged["purged"], 2, "{purged}");
    let last = last_sequence(&url, "rolled-back");
    let api = format!("STREAM.MSG.DELETE.{STREAM_NAME}");
    let deleted = jetstream_api(&url, &api, json!({"seq": last}));
    assert_eq!(deleted["success"], true, "{deleted}");

    let (code, summary, errors) = audit_errors(&["audit", "--nats", &url]);
    assert_eq!(code, Some(1), "{summary}");
    let removed: Vec<u64> = errors.iter().map(|(_, first, _)| *first).collect();
    assert_eq!(removed, [1, last], "{summary}");
    assert!(
        errors[0]
            .2
            .contains("positions 1..=2 were deleted or purged"),
        "{summary}"
    );
}

/// The embedded log: a stream removed from the sled files (every record and
/// its head) passed `audit`; now its positions are reported.
#[test]
fn a_stream_removed_from_the_sled_files_is_reported_by_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let mut up = FlotillaUp::start(&["--data-dir", &data_arg], dir.path());
    for id in ["first", "removed", "last"] {
        assert_eq!(up.send("solver", id, &create()).0, 200);
    }
    up.terminate();
    let (code, summary, _) = audit_errors(&["audit", "--data-dir", &data_arg]);
    assert_eq!(
        (code, &summary["events"]),
        (Some(0), &json!(3)),
        "untouched: {summary}"
    );
    flotilla_bus::embedded::purge_stream_for_test(&data.join("log"), "solver/removed");

    let (code, summary, errors) = audit_errors(&["audit", "--data-dir", &data_arg]);
    assert_eq!(code, Some(1), "{summary}");
    assert_eq!(summary["streams"], 2, "{summary}");
    let found: Vec<u64> = errors.iter().map(|(_, first, _)| *first).collect();
    assert_eq!(found, [2], "{summary}");
    assert!(errors[0].2.contains("positions 2..=2"), "{summary}");
}
