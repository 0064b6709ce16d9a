use super::*;
use flotilla_messages::{Payload, GENESIS_HASH};

fn study_view(direction: &str) -> Value {
    json!({
        "status": "running",
        "config": {"seed": 1, "budget": 10, "direction": direction,
                   "bounds": {"x": {"min": 0.0, "max": 1.0}}},
        "trials": [
            {"trial_id": "t1", "params": {"x": 0.5}, "state": "completed", "value": 0.25, "cost": 1.5},
            {"trial_id": "t2", "params": {"x": 0.1}, "state": "failed", "value": null, "cost": null},
            {"trial_id": "t3", "params": {"x": 0.3}, "state": "completed", "value": 0.75, "cost": null},
            {"trial_id": "t4", "params": {"x": 0.9}, "state": "asked", "value": null, "cost": null},
            {"trial_id": "t5", "params": {"x": 0.2}, "state": "completed", "value": 0.5, "cost": 2.0},
        ],
    })
}

#[test]
fn a_study_view_maps_to_arqonhpo_state_with_only_told_trials() {
    let state = ArqonState::from_study_view(&study_view("minimize"), Some("r1".into())).unwrap();
    assert_eq!(state.config["budget"], 10);
    let values: Vec<f64> = state.history.iter().map(|h| h.value).collect();
    assert_eq!(values, [0.25, 0.75, 0.5]);
    assert_eq!(state.history[0].cost, Some(1.5));
    assert_eq!(state.history[1].cost, None);
    let wire = serde_json::to_value(&state).unwrap();
    assert_eq!(
        wire["history"][0],
        json!({"params": {"x": 0.5}, "value": 0.25, "cost": 1.5})
    );
    assert_eq!(wire["run_id"], "r1");
}

#[test]
fn the_summary_has_budget_length_best_and_latest() {
    let min = ArqonState::from_study_view(&study_view("minimize"), Some("r1".into())).unwrap();
    assert_eq!(
        json!(min.summary()),
        json!({"run_id": "r1", "budget": 10, "history_len": 3, "best": 0.25, "latest": 0.5})
    );
    let max = ArqonState::from_study_view(&study_view("maximize"), None).unwrap();
    assert_eq!(max.summary().best, Some(0.75));
    let empty = ArqonState {
        config: json!({"budget": 4}),
        history: vec![],
        run_id: None,
    };
    assert_eq!(
        json!(empty.summary()),
        json!({"run_id": null, "budget": 4, "history_len": 0, "best": null, "latest": null})
    );
}

const LINES: &[&str] = &[
    r#"{"event": "start", "timestamp_us": 100}"#,
    "",
    r#"{"event": "tell", "value": 1}"#,
    "not json",
    r#"{"event_type": "tell", "value": 2, "note": "slow node"}"#,
    r#"{"event": "tell", "value": 3}"#,
    r#"{"event": "stop", "details": "slow disk"}"#,
];

fn select(query: &str) -> Vec<Value> {
    parse_query::<EventsQuery>(query)
        .unwrap()
        .select(LINES.iter().copied())
}

#[test]
fn events_filter_by_type_and_text_and_keep_the_newest_in_order() {
    assert_eq!(select("").len(), 5);
    assert_eq!(
        select("event=&q=&limit=").len(),
        5,
        "as ArqonHPO's page asks"
    );
    let tells = select("event=tell");
    let values: Vec<&Value> = tells.iter().map(|e| &e["value"]).collect();
    assert_eq!(values, [&json!(1), &json!(2), &json!(3)]);
    let newest = select("event=tell&limit=2");
    assert_eq!(newest[0]["value"], 2);
    assert_eq!(newest[1]["value"], 3);
    let slow = select("q=slow");
    assert_eq!(slow.len(), 2);
    assert_eq!(slow[0]["note"], "slow node");
    assert_eq!(select("q=slow+disk")[0]["event"], "stop");
    assert_eq!(select("q=slow%20disk&event=tell"), Vec::<Value>::new());
    assert_eq!(select("limit=1")[0]["event"], "stop");
}

#[test]
fn bad_queries_are_refused_naming_the_parameter() {
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=10001", "limit"),
        ("limit=1&limit=2", "limit"),
        ("lmit=3", "lmit"),
    ] {
        let e = parse_query::<EventsQuery>(query).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField, "{query}");
        assert!(e.message.contains(field), "{query}: {}", e.message);
    }
    let e = parse_query::<ActionsQuery>("event=tell").unwrap_err();
    assert!(e.message.contains("event"), "{}", e.message);
}

#[test]
fn actions_keep_the_newest_limit_in_order() {
    let actions: Vec<Value> = (0..10).map(|i| json!({"i": i})).collect();
    let q = parse_query::<ActionsQuery>("limit=3").unwrap();
    assert_eq!(
        q.select(actions.clone()),
        [json!({"i": 7}), json!({"i": 8}), json!({"i": 9})]
    );
    assert_eq!(ActionsQuery::default().select(actions).len(), 10);
}

#[test]
fn posted_actions_are_checked() {
    let ok = ActionRequest::parse(br#"{"action": "pause", "reason": "maintenance"}"#).unwrap();
    assert_eq!(ok.action, Action::Pause);
    assert_eq!(ok.reason.as_deref(), Some("maintenance"));
    assert_eq!(
        ActionRequest::parse(br#"{"action": "rollback"}"#)
            .unwrap()
            .action,
        Action::Rollback
    );
    let unknown = ActionRequest::parse(br#"{"action": "explode"}"#).unwrap_err();
    assert_eq!(unknown.code, ErrorCode::InvalidField);
    assert!(
        unknown.message.contains("pause, resume, rollback"),
        "{}",
        unknown.message
    );
    let long = format!(r#"{{"action": "pause", "reason": "{}"}}"#, "x".repeat(1001));
    assert!(ActionRequest::parse(long.as_bytes())
        .unwrap_err()
        .message
        .contains("reason"));
    for body in [
        &b"not json"[..],
        b"{}",
        br#"{"action": 3}"#,
        br#"{"action": "pause", "x": 1}"#,
    ] {
        let e = ActionRequest::parse(body).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
    }
    let record = ok.record("alice");
    assert_eq!(record["action"], "pause");
    assert_eq!(record["principal"], "alice");
    assert!(record["timestamp_us"].as_i64().unwrap() > 0);
}

fn envelope(event_type: &str, payload: Value) -> Envelope {
    Envelope {
        id: "e1".into(),
        stream: "study_run/s".into(),
        seq: 4,
        event_type: event_type.into(),
        at: "2026-01-02T03:04:05.000006Z".parse().unwrap(),
        causation_id: "c".into(),
        correlation_id: "c".into(),
        checksum: String::new(),
        prev_hash: GENESIS_HASH.into(),
        payload: Payload::from_value(&payload),
        principal: Some("bob".into()),
        signature: None,
    }
}

#[test]
fn pauses_resumes_and_rollbacks_in_the_log_are_actions() {
    let paused = envelope(
        "run_paused",
        json!({"type": "run_paused", "reason": "lunch"}),
    );
    let action = action_of(&paused).unwrap();
    assert_eq!(action["action"], "pause");
    assert_eq!(action["reason"], "lunch");
    assert_eq!(action["principal"], "bob");
    assert_eq!(action["timestamp_us"], paused.at.timestamp_micros());
    let resumed = envelope("run_resumed", json!({"type": "run_resumed"}));
    assert_eq!(action_of(&resumed).unwrap()["reason"], Value::Null);
    let rollback = envelope(
        "candidates_enqueued",
        json!({"type": "candidates_enqueued", "candidates": [{"x": 0.5}], "rollback_to": "t1"}),
    );
    let action = action_of(&rollback).unwrap();
    assert_eq!(
        (action["action"].as_str(), &action["params"]),
        (Some("rollback"), &json!({"x": 0.5}))
    );
    let plain = envelope(
        "candidates_enqueued",
        json!({"type": "candidates_enqueued", "candidates": []}),
    );
    assert_eq!(action_of(&plain), None);
    assert_eq!(action_of(&envelope("run_started", json!({}))), None);
    let event = event_json(&paused);
    assert_eq!(event["event"], "run_paused");
    assert_eq!(
        (event["seq"].as_u64(), event["principal"].as_str()),
        (Some(4), Some("bob"))
    );
    assert_eq!(event["data"]["reason"], "lunch");
}
