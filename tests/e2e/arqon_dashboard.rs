//! ArqonHPO's dashboard API against the real processes: a study in `flotilla
//! up` (with a tokens file) answers `/v1/studies/<id>/api/state`,
//! `summary`, `events` and `actions` in ArqonHPO's shapes with the study's
//! real values; a rollback enqueues the best trial's parameters, pause and
//! resume steer a real study run, and each action is read back from the
//! log; a viewer may read but not act. `flotilla dashboard --state` serves
//! the same shapes for the state file `flotilla run --state` wrote and
//! appends actions to its actions file.

use crate::http_auth::{call, tokens_file};
use crate::study_run::write_script;
use crate::support::{flotilla, flotilla_bin, free_port, http_client, wait_until, FlotillaUp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An operator's and a viewer's view of one server.
struct Client<'a> {
    base: String,
    tokens: &'a BTreeMap<&'static str, String>,
}

impl Client<'_> {
    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body, _) = call(
            "GET",
            &format!("{}{path}", self.base),
            Some(&self.tokens["viewer"]),
            None,
        );
        (status, body)
    }

    fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn post(&self, role: &str, path: &str, body: &Value) -> (u16, Value) {
        let (status, body, _) = call(
            "POST",
            &format!("{}{path}", self.base),
            Some(&self.tokens[role]),
            Some(body),
        );
        (status, body)
    }
}

fn values(history: &Value) -> Vec<f64> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["value"].as_f64().unwrap())
        .collect()
}

/// The path of an executable script `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> String {
    write_script(dir, name, body).display().to_string()
}

#[test]
fn a_study_answers_arqonhpo_dashboard_shapes_and_its_actions_steer_it() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path());
    let data = dir.path().join("data");
    let up = FlotillaUp::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--tokens",
            file.to_str().unwrap(),
        ],
        dir.path(),
    );
    let api = Client {
        base: format!("{}/v1/studies/arq", up.url),
        tokens: &tokens,
    };
    let cmd = Client {
        base: format!("{}/v1/cmd/solver/arq", up.url),
        tokens: &tokens,
    };
    let create = json!({"type": "create_study", "seed": 2, "budget": 6,
        "bounds": {"x": {"min": 0.0, "max": 1.0}}});
    assert_eq!(cmd.post("operator", "", &create).0, 200);
    let (status, asked) = cmd.post("operator", "", &json!({"type": "ask", "n": 3}));
    assert_eq!(status, 200, "{asked}");
    let told: Vec<(f64, Option<f64>)> = vec![(0.5, Some(1.5)), (0.2, None), (0.9, Some(3.0))];
    let results: Vec<Value> = asked["result"]["trials"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&told)
        .map(|(t, (value, cost))| json!({"trial_id": t["trial_id"], "value": value, "cost": cost}))
        .collect();
    let (status, reply) = cmd.post("operator", "", &json!({"type": "tell", "results": results}));
    assert_eq!(status, 200, "{reply}");

    // The state and the summary hold the study's real values.
    let run_id = first_event_id(&up, &tokens);
    let state = api.get_ok("/api/state");
    assert_eq!(state["config"]["budget"], 6, "{state}");
    assert_eq!(state["run_id"], run_id, "{state}");
    assert_eq!(values(&state["history"]), [0.5, 0.2, 0.9], "{state}");
    assert_eq!(state["history"][0]["cost"], 1.5, "{state}");
    assert_eq!(state["history"][1]["cost"], Value::Null, "{state}");
    assert_eq!(
        state["history"][0]["params"],
        asked["result"]["trials"][0]["params"]
    );
    let summary = api.get_ok("/api/summary");
    assert_eq!(
        summary,
        json!({"run_id": run_id, "budget": 6, "history_len": 3, "best": 0.2, "latest": 0.9})
    );

    // The study's events, filtered and limited.
    let events = api.get_ok("/api/events")["events"].clone();
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["study_created", "trials_asked", "trials_told"]);
    assert_eq!(events[0]["principal"], "operator-user", "{events}");
    assert_eq!(events[0]["seq"], 1);
    let told_only = api.get_ok("/api/events?event=trials_told")["events"].clone();
    assert_eq!(told_only.as_array().unwrap().len(), 1, "{told_only}");
    assert_eq!(told_only[0]["data"]["results"][2]["value"], 0.9);
    let newest = api.get_ok("/api/events?limit=2")["events"].clone();
    assert_eq!(newest[0]["event"], "trials_asked", "{newest}");
    let searched = api.get_ok("/api/events?q=create_study")["events"].clone();
    assert_eq!(
        searched.as_array().unwrap().len(),
        0,
        "the payloads hold no command type"
    );
    let searched = api.get_ok("/api/events?q=%22budget%22%3A6")["events"].clone();
    assert_eq!(searched[0]["event"], "study_created", "{searched}");
    for bad in ["limit=abc", "limit=0", "since=3"] {
        let (status, body) = api.get(&format!("/api/events?{bad}"));
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("INVALID_FIELD")),
            "{bad}: {body}"
        );
    }
    assert_eq!(api.get_ok("/api/actions"), json!({"actions": []}));
    let (status, body) = up_get(&up, &tokens, "/v1/studies/nope/api/state");
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("NOT_FOUND")),
        "{body}"
    );

    // Actions: checked, and operator only.
    let (status, body) = api.post("operator", "/api/actions", &json!({"action": "explode"}));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("pause, resume, rollback"), "{message}");
    let (status, body) = api.post("viewer", "/api/actions", &json!({"action": "pause"}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["missing_permission"], "command", "{body}");
    let (status, body) = api.post("operator", "/api/actions", &json!({"action": "pause"}));
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("NOT_FOUND")),
        "no run yet: {body}"
    );
    let foreign = http_client()
        .post(format!("{}/api/actions", api.base))
        .bearer_auth(&tokens["operator"])
        .header("Origin", "http://evil.example")
        .json(&json!({"action": "rollback"}))
        .send()
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 403, "a foreign page may not act");

    // Rollback: the best trial's parameters are enqueued.
    let rollback = json!({"action": "rollback", "reason": "t3 diverged"});
    let (status, body) = api.post("operator", "/api/actions", &rollback);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["ok"].as_bool(), body["recorded"].as_bool()),
        (Some(true), Some(true))
    );
    let view = up_get(&up, &tokens, "/v1/query/solver/arq").1["result"].clone();
    assert_eq!(view["counts"]["queued"], 1, "{view}");

    // Pause and resume a real study run.
    let script = script(
        dir.path(),
        "eval.sh",
        "#!/bin/sh\nsleep 1\necho RESULT=$ARQON_x\n",
    );
    let start = json!({"type": "start_run", "command": [script], "parallel": 1});
    let run = Client {
        base: format!("{}/v1/cmd/study_run/arq", up.url),
        tokens: &tokens,
    };
    let (status, reply) = run.post("operator", "", &start);
    assert_eq!(status, 200, "{reply}");
    let run_status =
        || up_get(&up, &tokens, "/v1/query/study_run/arq").1["result"]["status"].clone();
    wait_until(Duration::from_secs(30), || {
        (run_status() == "running").then_some(())
    })
    .unwrap_or_else(|| panic!("the run did not start: {}\n{}", run_status(), up.log()));
    let pause = json!({"action": "pause", "reason": "maintenance"});
    let (status, body) = api.post("operator", "/api/actions", &pause);
    assert_eq!(
        (status, body["recorded"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(run_status(), "paused");
    let (status, body) = api.post("operator", "/api/actions", &pause);
    assert_eq!(
        (status, body["recorded"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    let (status, body) = api.post("operator", "/api/actions", &json!({"action": "resume"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(run_status(), "running");

    let actions = api.get_ok("/api/actions")["actions"].clone();
    let summary: Vec<(&str, &Value)> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), &a["reason"]))
        .collect();
    assert_eq!(
        summary,
        [
            ("rollback", &json!("t3 diverged")),
            ("pause", &json!("maintenance")),
            ("resume", &Value::Null)
        ]
    );
    assert_eq!(actions[0]["rollback_to"], "t2", "the best trial: {actions}");
    assert_eq!(actions[0]["params"], state["history"][1]["params"]);
    assert!(actions
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["principal"] == "operator-user" && a["timestamp_us"].as_i64().unwrap() > 0));
    let last = api.get_ok("/api/actions?limit=1")["actions"].clone();
    assert_eq!(last[0]["action"], "resume", "{last}");
}

fn up_get(up: &FlotillaUp, tokens: &BTreeMap<&'static str, String>, path: &str) -> (u16, Value) {
    let (status, body, _) = call(
        "GET",
        &format!("{}{path}", up.url),
        Some(&tokens["viewer"]),
        None,
    );
    (status, body)
}

/// The id of the study's first event, from `/v1/events` (JSON lines).
fn first_event_id(up: &FlotillaUp, tokens: &BTreeMap<&'static str, String>) -> Value {
    let text = http_client()
        .get(format!("{}/v1/events?stream=solver/arq", up.url))
        .bearer_auth(&tokens["viewer"])
        .send()
        .unwrap()
        .text()
        .unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    first["id"].clone()
}

/// A running `flotilla dashboard`, killed on drop.
struct Dashboard(Child);

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn flotilla_dashboard_serves_a_run_state_file_and_appends_actions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = script(
        d,
        "eval.sh",
        "#!/bin/sh\nawk -v x=\"$ARQON_x\" 'BEGIN { printf \"RESULT=%f\\n\", (x - 0.3) * (x - 0.3) }'\n",
    );
    let config =
        json!({"seed": 4, "budget": 5, "bounds": {"x": {"min": 0, "max": 1, "scale": "Linear"}}});
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    let out = Command::new(flotilla_bin())
        .args(["run", "--config", "config.json", "--script", &script])
        .args(["--state", "state.json", "--data-dir", "data"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("state.json")).unwrap()).unwrap();

    // Start-time errors name the file, exit 2.
    let missing = flotilla(&["dashboard", "--state", "/nonexistent/state.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/state.json"));
    let open = flotilla(&[
        "dashboard",
        "--state",
        d.join("state.json").to_str().unwrap(),
        "--addr",
        "0.0.0.0:0",
    ]);
    assert_eq!(open.status.code(), Some(2), "no tokens beyond loopback");

    let events = d.join("events.jsonl");
    std::fs::write(
        &events,
        "{\"event\": \"ask\", \"n\": 1}\n{\"event\": \"tell\", \"value\": 0.5}\n\
         {\"event_type\": \"tell\", \"value\": 0.25}\n",
    )
    .unwrap();
    let (tokens_path, tokens) = tokens_file(d);
    let port = free_port();
    let dashboard = Dashboard(
        Command::new(flotilla_bin())
            .args([
                "dashboard",
                "--state",
                "state.json",
                "--events",
                "events.jsonl",
            ])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--tokens", tokens_path.to_str().unwrap()])
            .current_dir(d)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = Client {
        base: format!("http://127.0.0.1:{port}"),
        tokens: &tokens,
    };
    wait_until(Duration::from_secs(20), || {
        http_client()
            .get(format!("{}/api/state", api.base))
            .send()
            .ok()
            .map(|_| ())
    })
    .expect("the dashboard listens");

    let state = api.get_ok("/api/state");
    assert_eq!(state["config"], written["config"]);
    assert_eq!(state["history"], written["history"]);
    assert_eq!(state["run_id"], written["run_id"]);
    let history = values(&written["history"]);
    assert_eq!(history.len(), 5);
    let best = history.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(
        api.get_ok("/api/summary"),
        json!({"run_id": written["run_id"], "budget": 5, "history_len": 5,
               "best": best, "latest": history[4]})
    );
    let tells = api.get_ok("/api/events?event=tell&limit=1")["events"].clone();
    assert_eq!(tells, json!([{"event_type": "tell", "value": 0.25}]));
    assert_eq!(api.get_ok("/api/events?q=ask")["events"][0]["n"], 1);
    assert_eq!(api.get("/api/events?limit=x").0, 400);

    let (status, body) = api.post("viewer", "/api/actions", &json!({"action": "pause"}));
    assert_eq!(status, 403, "{body}");
    let foreign = http_client()
        .post(format!("{}/api/actions", api.base))
        .bearer_auth(&tokens["operator"])
        .header("Origin", "http://evil.example")
        .json(&json!({"action": "pause"}))
        .send()
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 403, "a foreign page may not act");
    let form = http_client()
        .post(format!("{}/api/actions", api.base))
        .bearer_auth(&tokens["operator"])
        .header("Content-Type", "text/plain")
        .body(r#"{"action": "pause"}"#)
        .send()
        .unwrap();
    assert_eq!(form.status().as_u16(), 415, "an action must be JSON");
    let (status, body) = api.post("operator", "/api/actions", &json!({"action": "halt"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.post(
        "operator",
        "/api/actions",
        &json!({"action": "pause", "reason": "look"}),
    );
    assert_eq!((status, body), (200, json!({"ok": true})));
    let lines = std::fs::read_to_string(d.join("state.json.actions.jsonl")).unwrap();
    let recorded: Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(
        (recorded["action"].as_str(), recorded["reason"].as_str()),
        (Some("pause"), Some("look"))
    );
    assert!(recorded["timestamp_us"].as_i64().unwrap() > 0, "{recorded}");
    let actions = api.get_ok("/api/actions")["actions"].clone();
    assert_eq!(actions, json!([recorded]));

    // The state file is read on every request: gone is 503 with a code.
    std::fs::remove_file(d.join("state.json")).unwrap();
    let (status, body) = api.get("/api/summary");
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("UNAVAILABLE")),
        "{body}"
    );
    drop(dashboard);
}
