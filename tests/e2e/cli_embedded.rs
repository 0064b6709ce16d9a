//! End-to-end: the real `flotilla` binary on the embedded backend — the HTTP
//! contract, bad input, encodings, and the log tools (`events`, `audit`,
//! `replay`) on the data it wrote, including a corrupted record; and
//! `signing-key`, whose key `up` signs with and `audit` checks.

use crate::support::{flotilla, flotilla_bin, http_client, json_lines, FlotillaUp};
use serde_json::{json, Value};

fn create(budget: u64) -> Value {
    json!({"type": "create_study", "seed": 11, "budget": budget,
           "bounds": {"x": {"min": -5, "max": 10}, "lr": {"min": 0.0001, "max": 0.1, "scale": "LOG"}}})
}

fn data_dir_args(dir: &std::path::Path) -> Vec<String> {
    vec!["--data-dir".into(), dir.join("data").display().to_string()]
}

fn start(dir: &std::path::Path) -> FlotillaUp {
    let args = data_dir_args(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FlotillaUp::start(&args, dir)
}

fn seq_of(up: &FlotillaUp, id: &str) -> u64 {
    up.get(&format!("/v1/query/solver/{id}")).1["seq"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn health_readiness_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(dir.path());
    assert_eq!(up.get("/healthz").0, 200);
    assert_eq!(up.get("/readyz"), (200, json!({"status": "ready"})));
    up.send("solver", "m", &create(3));
    let text = http_client()
        .get(format!("{}/metrics", up.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains("flotilla_commands_total{actor=\"solver\",outcome=\"accepted\"} 1"),
        "{text}"
    );
}

#[test]
fn bad_input_gets_a_typed_error_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(dir.path());
    assert_eq!(up.send("solver", "s", &create(10)).0, 200);
    let client = http_client();
    let raw = |path: &str, ct: &str, body: Vec<u8>| {
        let r = client
            .post(format!("{}{path}", up.url))
            .header("Content-Type", ct)
            .body(body)
            .send()
            .unwrap();
        let msgpack = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/msgpack");
        let status = r.status().as_u16();
        let bytes = r.bytes().unwrap();
        let reply: Value = if msgpack {
            rmp_serde::from_slice(&bytes).unwrap_or(Value::Null)
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, reply)
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/v1/cmd/solver/s",
            "application/json",
            b"{\"type\": \"ask\"".to_vec(),
            400,
            "MALFORMED_BODY",
        ),
        (
            "/v1/cmd/solver/s",
            "application/msgpack",
            vec![0xc1, 0x00],
            400,
            "MALFORMED_BODY",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            b"[1, 2]".to_vec(),
            400,
            "MALFORMED_BODY",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            br#"{"type": "fly"}"#.to_vec(),
            400,
            "UNKNOWN_COMMAND",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            br#"{"type": "ask", "n": 1, "bogus": 1}"#.to_vec(),
            400,
            "UNKNOWN_FIELD",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            br#"{"type": "ask", "n": -1}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "/v1/cmd/solver/bad.id",
            "application/json",
            br#"{"type": "ask"}"#.to_vec(),
            400,
            "INVALID_ID",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            br#"{"type": "ask", "command_id": "no spaces"}"#.to_vec(),
            400,
            "INVALID_ID",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            br#"{"type": "ask", "command_id": "fx-0123"}"#.to_vec(),
            400,
            "INVALID_ID",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            br#"{"type": "ask", "expected_seq": 5}"#.to_vec(),
            409,
            "WRONG_EXPECTED_SEQ",
        ),
        (
            "/v1/cmd/solver/s",
            "application/json",
            br#"{"type": "tell", "trial_id": "t99", "value": 1}"#.to_vec(),
            422,
            "UNKNOWN_TRIAL",
        ),
        (
            "/v1/cmd/nobody/s",
            "application/json",
            br#"{"type": "ask"}"#.to_vec(),
            404,
            "UNKNOWN_ACTOR",
        ),
        (
            "/v1/cmd/scheduler/s",
            "application/json",
            br#"{"type": "submit"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        // Inference workers are processes of their own, not hosted by `up`.
        (
            "/v1/cmd/inference/s",
            "application/json",
            br#"{"type": "roll_back"}"#.to_vec(),
            503,
            "UNAVAILABLE",
        ),
        (
            "/v1/cmd/solver/s",
            "text/csv",
            b"a,b".to_vec(),
            400,
            "MALFORMED_BODY",
        ),
    ];
    for (path, ct, body, status, code) in cases {
        let (got_status, reply) = raw(path, ct, body.clone());
        let what = String::from_utf8_lossy(&body).to_string();
        assert_eq!(got_status, status, "{path} {what}: {reply}");
        assert_eq!(reply["ok"], false, "{what}");
        assert_eq!(reply["error"]["code"], code, "{what}: {reply}");
        assert!(!reply["error"]["message"].as_str().unwrap_or("").is_empty());
        assert_eq!(seq_of(&up, "s"), 1, "{what} appended something");
    }
    let big = vec![b' '; 2 * 1024 * 1024];
    let (status, _) = raw("/v1/cmd/solver/s", "application/json", big);
    assert_eq!(status, 413, "an oversized body is refused");
    assert_eq!(seq_of(&up, "s"), 1);
}

#[test]
fn msgpack_requests_get_msgpack_replies_and_keys_make_commands_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(dir.path());
    let body = rmp_serde_named(&create(6));
    let r = http_client()
        .post(format!("{}/v1/cmd/solver/mp", up.url))
        .header("Content-Type", "application/msgpack")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/msgpack");
    let reply: Value = rmp_serde::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["events"][0]["type"], "study_created");

    let ask = json!({"type": "ask", "n": 2});
    let (_, first) = up.send_with_key("solver", "mp", &ask, "ask-1");
    let (_, again) = up.send_with_key("solver", "mp", &ask, "ask-1");
    assert_eq!(first, again, "a repeated key returns the first reply");
    let (_, body_key) = up.send(
        "solver",
        "mp",
        &json!({"type": "ask", "n": 2, "command_id": "ask-1"}),
    );
    assert_eq!(first, body_key, "command_id in the body is the same key");
    assert_eq!(seq_of(&up, "mp"), 2, "appended once");
}

fn rmp_serde_named(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

fn run_study(up: &FlotillaUp, id: &str, rounds: usize) {
    assert_eq!(up.send("solver", id, &create(rounds as u64 * 2)).0, 200);
    for _ in 0..rounds {
        let (_, reply) = up.send("solver", id, &json!({"type": "ask", "n": 2}));
        let trials = reply["result"]["trials"].as_array().unwrap().clone();
        let results: Vec<Value> = trials
            .iter()
            .map(|t| json!({"trial_id": t["trial_id"], "value": t["params"]["x"]}))
            .collect();
        let (status, told) = up.send("solver", id, &json!({"type": "tell", "results": results}));
        assert_eq!(status, 200, "{told}");
    }
}

#[test]
fn events_audit_and_replay_read_what_up_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir_args(dir.path());
    let mut up = start(dir.path());
    run_study(&up, "a", 5);
    run_study(&up, "b", 3);
    let live = up.get("/v1/query/solver/a").1;

    // While up runs, events come over HTTP (sled is locked by the server).
    let over_http = flotilla(&["events", "--http", &up.url, "--stream", "solver/a"]);
    assert!(
        over_http.status.success(),
        "{}",
        String::from_utf8_lossy(&over_http.stderr)
    );
    assert_eq!(json_lines(&over_http.stdout).len(), 11);
    let locked = flotilla(&["audit", &data[0], &data[1]]);
    assert!(!locked.status.success());
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("in use"),
        "a clear lock message"
    );
    up.terminate();

    let all = flotilla(&["events", &data[0], &data[1]]);
    let lines = json_lines(&all.stdout);
    assert_eq!(lines.len(), 11 + 7);
    let from = flotilla(&[
        "events", &data[0], &data[1], "--stream", "solver/a", "--from", "10",
    ]);
    let seqs: Vec<u64> = json_lines(&from.stdout)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![10, 11]);

    let audit = flotilla(&["audit", &data[0], &data[1]]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let summary: Value = serde_json::from_slice(&audit.stdout).unwrap();
    // The embedded control plane signs with the data dir's key, and audit
    // checks with its public key from there; every command came over the
    // unauthenticated loopback gateway.
    assert_eq!(
        summary,
        json!({"ok": true, "streams": 2, "events": 18, "signed": 18, "unsigned": 0,
               "signatures_checked": true, "principals": {"anonymous": 18}})
    );

    let replay = flotilla(&["replay", "--stream", "solver/a", &data[0], &data[1]]);
    let replayed: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(
        replayed["state"], live["result"],
        "a clean replay equals the live state"
    );
    assert_eq!(replayed["seq"], live["seq"]);
    let early = flotilla(&[
        "replay",
        "--stream",
        "solver/a",
        "--until-seq",
        "2",
        &data[0],
        &data[1],
    ]);
    let early: Value = serde_json::from_slice(&early.stdout).unwrap();
    assert_eq!(early["seq"], 2);
    assert_eq!(early["state"]["counts"]["asked"], 2);
    assert_eq!(early["state"]["counts"]["told"], 0);
    let t3 = lines[2]["at"].as_str().unwrap().to_string();
    let by_time = flotilla(&[
        "replay",
        "--stream",
        "solver/a",
        "--until-time",
        &t3,
        &data[0],
        &data[1],
    ]);
    let by_time: Value = serde_json::from_slice(&by_time.stdout).unwrap();
    assert_eq!(by_time["seq"], 3);
    let bad_time = flotilla(&[
        "replay",
        "--stream",
        "solver/a",
        "--until-time",
        "yesterday",
        &data[0],
        &data[1],
    ]);
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("until-time"));

    // Damage one record: audit names it, recovery refuses it.
    flotilla_bus::embedded::corrupt_event_for_test(&dir.path().join("data/log"), "solver/a", 4);
    let audit = flotilla(&["audit", &data[0], &data[1]]);
    assert_eq!(audit.status.code(), Some(1));
    let summary: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["error"]["stream"], "solver/a");
    assert_eq!(summary["error"]["seq"], 4);
}

#[test]
fn state_survives_a_restart_and_equals_a_clean_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = start(dir.path());
    run_study(&up, "r", 4);
    let before = up.get("/v1/query/solver/r").1;
    up.restart();
    let after = up.get("/v1/query/solver/r").1;
    assert_eq!(before, after);
    let (_, next) = up.send("solver", "r", &json!({"type": "ask"}));
    assert_eq!(next["result"]["trials"], json!([]), "the budget is spent");
    assert_eq!(up.get("/v1/query/solver").1["result"]["ids"], json!(["r"]));
    let (status, ghost) = up.get("/v1/query/solver/ghost");
    assert_eq!(
        (status, &ghost["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );
    assert_eq!(
        up.get("/v1/query/solver").1["result"]["ids"],
        json!(["r"]),
        "a query creates nothing"
    );
}

#[test]
fn a_flag_beats_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = start(dir.path());
    run_study(&up, "p", 1);
    up.terminate();
    let data = dir.path().join("data");
    let out = std::process::Command::new(flotilla_bin())
        .args(["audit", "--data-dir", data.to_str().unwrap()])
        .env("FLOTILLA_NATS", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(flotilla_bin())
        .args(["audit"])
        .env("FLOTILLA_DATA_DIR", data.to_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the environment names the data dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn configuration_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "snapshot_every = \"often\"\n").unwrap();
    let out = flotilla(&["up", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("snapshot_every"));
    let out = flotilla(&[
        "up",
        "--http",
        "not-an-address",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("http:"));
    let out = flotilla(&[
        "up",
        "--only",
        "solver,wizard",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("only:"));
    let out = std::process::Command::new(flotilla_bin())
        .args(["up", "--data-dir", dir.path().to_str().unwrap()])
        .env("FLOTILLA_SNAPSHOT_EVERY", "-3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("snapshot-every"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flotilla(&["send", "solver", "x", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command:"));
}

#[test]
fn send_prints_the_reply_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(dir.path());
    let send = || {
        flotilla(&[
            "send",
            "solver",
            "c",
            &create(2).to_string(),
            "--http",
            &up.url,
        ])
    };
    let ok = send();
    assert_eq!(ok.status.code(), Some(0));
    let reply: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(reply["seq"], 1);
    let refused = send();
    assert_eq!(refused.status.code(), Some(1));
    let reply: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "ALREADY_EXISTS");
}

#[test]
fn report_exits_by_the_pruners_answer() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(dir.path());
    let create = json!({"type": "create_study", "seed": 1, "budget": 3,
        "bounds": {"x": {"min": 0, "max": 1}},
        "pruner": {"type": "median", "n_startup_trials": 1}});
    assert_eq!(up.send("solver", "p", &create).0, 200);
    assert_eq!(
        up.send("solver", "p", &json!({"type": "ask", "n": 3})).0,
        200
    );
    let report = |trial: &str, step: &str, value: &str| {
        flotilla(&[
            "report", "--study", "p", "--trial", trial, "--step", step, "--value", value, "--http",
            &up.url,
        ])
    };
    assert_eq!(report("t1", "1", "0.5").status.code(), Some(0));
    let tell = json!({"type": "tell", "trial_id": "t1", "value": 0.5});
    assert_eq!(up.send("solver", "p", &tell).0, 200);
    let better = report("t2", "1", "-0.25");
    assert_eq!(better.status.code(), Some(0));
    let answer: Value = serde_json::from_slice(&better.stdout).unwrap();
    assert_eq!(answer, json!({"trial_id": "t2", "action": "continue"}));
    let worse = report("t3", "1", "0.75");
    assert_eq!(worse.status.code(), Some(3), "prune");
    let again = report("t3", "2", "0.1");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("was pruned at step 1"));
    let view = up.get("/v1/query/solver/p").1;
    assert_eq!(view["result"]["counts"]["pruned"], 1, "{view}");
}

#[test]
fn signing_key_makes_a_key_once_that_up_signs_with_and_audit_checks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys").join("control-plane.key");
    let key_arg = key.display().to_string();
    let make = |path: &str| {
        let out = flotilla(&["signing-key", path]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = make(&key_arg);
    let (public, hex) = printed.trim().split_once(' ').unwrap();
    assert_eq!(public, format!("{key_arg}.pub"));
    assert_eq!(std::fs::read_to_string(public).unwrap().trim(), hex);
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(
        secret.trim().len() == 64 && secret.trim().chars().all(|c| c.is_ascii_hexdigit()),
        "64 hex digits: {secret:?}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second run keeps the key.
    assert_eq!(make(&key_arg), printed);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), secret);

    // `up` signs with it, and `audit --verify-key FILE.pub` checks every
    // event; another key's public key finds none of them its own.
    let data = data_dir_args(dir.path());
    let mut up = FlotillaUp::start(&[&data[0], &data[1], "--signing-key", &key_arg], dir.path());
    run_study(&up, "signed", 1);
    up.terminate();
    let audit = flotilla(&["audit", &data[0], &data[1], "--verify-key", public]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let summary: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(summary["signatures_checked"], true, "{summary}");
    assert_eq!(summary["signed"], summary["events"], "{summary}");
    let other = make(&dir.path().join("other.key").display().to_string());
    let (other_public, _) = other.trim().split_once(' ').unwrap();
    let wrong = flotilla(&["audit", &data[0], &data[1], "--verify-key", other_public]);
    assert_eq!(
        wrong.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&wrong.stdout)
    );
}
