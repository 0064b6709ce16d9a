//! `seed` and `enqueue`: seeded results, queued candidates, the checks on
//! both, and snapshots that keep them.

use super::*;

#[test]
fn seeded_results_join_the_history_without_using_budget() {
    let created = when(&Study::default(), mixed_space(Sampler::Tpe, 5)).unwrap();
    let study = given(&created);
    let seed = json!({"type": "seed", "trials": [
        {"params": {"lr": 0.01, "dropout": 0.1, "batch": 64, "optimizer": "sgd", "momentum": 0.9, "nesterov": true},
         "value": 7.0, "cost": 3.5},
        {"params": {"lr": 0.001, "dropout": 0, "batch": 16, "optimizer": "adam"}, "value": 2.0}]});
    let (study, result) = step(study, seed);
    assert_eq!(result["seeded"], json!(["t1", "t2"]));
    assert_eq!(study.best().unwrap().trial.trial_id, "t1", "maximising");
    assert_eq!(
        study.trial("t2").unwrap().trial.params["dropout"],
        ParamValue::Float(0.0)
    );
    let view = study.view();
    assert_eq!(
        (
            view["counts"]["seeded"].clone(),
            view["counts"]["remaining"].clone()
        ),
        (json!(2), json!(5))
    );
    let study = run_to_budget(study, mixed_score);
    assert_eq!(study.trials().len(), 7);
    assert_eq!(study.status(), Some(StudyStatus::Completed));
}

#[test]
fn bad_seeds_and_candidates_name_the_problem() {
    let created = when(&Study::default(), mixed_space(Sampler::Random, 5)).unwrap();
    let study = given(&created);
    let full = json!({"lr": 0.01, "dropout": 0.1, "batch": 64, "optimizer": "adam"});
    let with = |key: &str, value: Value| {
        let mut params = full.clone();
        params[key] = value;
        params
    };
    let seed =
        |params: Value| json!({"type": "seed", "trials": [{"params": params, "value": 1.0}]});
    let cases = [
        (
            seed(with("lr", json!(5.0))),
            "seed: trials[0].params.lr: 5 is outside [0.00001, 0.1]",
        ),
        (
            seed(with("width", json!(3))),
            "seed: trials[0].params.width: not a parameter of the study",
        ),
        (
            seed(with("optimizer", json!("lion"))),
            "params.optimizer: lion is not one of the choices",
        ),
        (
            seed(with("momentum", json!(0.9))),
            "params.momentum: inactive here",
        ),
        (
            seed(json!({"lr": 0.01})),
            "seed: trials[0].params: missing \"batch\"",
        ),
        (
            seed(with("dropout", json!(0.12))),
            "not on the parameter's step",
        ),
        (
            json!({"type": "enqueue", "params": {"batch": 3.5}}),
            "enqueue: candidates[0].params.batch",
        ),
        (
            json!({"type": "enqueue", "candidates": [{}, {}, {}, {}, {}, {}]}),
            "room for 5 more queued trials, got 6",
        ),
    ];
    for (command, expected) in cases {
        let error = when(&study, command.clone()).unwrap_err();
        assert!(
            error.message.contains(expected),
            "{command}: {}",
            error.message
        );
    }
}

#[test]
fn enqueued_candidates_are_handed_out_first_and_filled_in() {
    let created = when(&Study::default(), mixed_space(Sampler::Tpe, 4)).unwrap();
    let study = given(&created);
    let (study, result) = step(
        study,
        json!({"type": "enqueue", "candidates": [
        {"lr": 0.001, "optimizer": "sgd", "nesterov": false}, {"batch": 128}]}),
    );
    assert_eq!(result["enqueued"], 2);
    let (study, result) = step(study, json!({"type": "ask", "n": 3}));
    let trials = result["trials"].as_array().unwrap();
    assert_eq!(trials[0]["params"]["lr"], 0.001);
    assert_eq!(trials[0]["params"]["optimizer"], "sgd");
    assert_eq!(trials[0]["params"]["nesterov"], false);
    assert!(
        trials[0]["params"]["momentum"].is_number(),
        "filled in: {}",
        trials[0]
    );
    assert_eq!(trials[1]["params"]["batch"], 128);
    assert_eq!(study.view()["counts"]["queued"], 0);
    assert_eq!(study.view()["counts"]["remaining"], 1);
}

#[test]
fn a_rollback_enqueue_names_a_handed_out_trial_and_records_why() {
    let created = when(&Study::default(), mixed_space(Sampler::Random, 4)).unwrap();
    let (study, _) = step(given(&created), json!({"type": "ask", "n": 1}));
    let unknown = json!({"type": "enqueue", "params": {"lr": 0.01}, "rollback_to": "t9"});
    let error = when(&study, unknown).unwrap_err();
    assert_eq!(error.code, ErrorCode::UnknownTrial);
    assert!(
        error.message.contains("enqueue: rollback_to"),
        "{}",
        error.message
    );
    let rollback = json!({"type": "enqueue", "params": {"lr": 0.01}, "rollback_to": "t1",
        "reason": "diverged"});
    let events = when(&study, rollback).unwrap();
    let recorded = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(
        (&recorded["rollback_to"], &recorded["reason"]),
        (&json!("t1"), &json!("diverged"))
    );
    let plain = when(&study, json!({"type": "enqueue", "params": {"lr": 0.01}})).unwrap();
    let plain = serde_json::to_value(&plain[0]).unwrap();
    assert!(
        plain.get("rollback_to").is_none() && plain.get("reason").is_none(),
        "{plain}"
    );
}

#[test]
fn snapshots_keep_reports_seeds_and_the_queue() {
    let created = when(&Study::default(), mixed_space(Sampler::Tpe, 6)).unwrap();
    let (study, _) = step(
        given(&created),
        json!({"type": "enqueue", "params": {"lr": 0.01}}),
    );
    let (study, _) = step(
        study,
        json!({"type": "seed", "trials": [
        {"params": {"lr": 0.001, "dropout": 0, "batch": 16, "optimizer": "adam"}, "value": 2.0}]}),
    );
    let (study, _) = step(study, json!({"type": "ask", "n": 1}));
    let (study, _) = report(study, "t2", 3, 0.5);
    let (study, _) = step(study, json!({"type": "enqueue", "params": {"lr": 0.02}}));
    let snapshot = serde_json::to_string(&study).unwrap();
    let back: Study = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(back, study);
    let ask = json!({"type": "ask", "n": 2});
    assert_eq!(
        when(&back, ask.clone()).unwrap(),
        when(&study, ask).unwrap()
    );
}
