//! `tell`: results all or nothing, repeats, conflicts, and the tell that
//! completes the study.

use super::*;

fn tell_one(value: f64, cost: Option<f64>) -> SolverCommand {
    SolverCommand::Tell(Tell {
        results: vec![TrialResult {
            cost,
            ..TrialResult::single("t1", value)
        }],
    })
}

#[test]
fn tell_records_results() {
    let study = given(&[created(5), asked(1..=2)]);
    let command = json!({"type": "tell", "results": [
        {"trial_id": "t2", "value": 0.5}, {"trial_id": "t1", "value": 0.7}]});
    let events = when(&study, command).unwrap();
    assert_eq!(events, vec![told(&[("t2", 0.5), ("t1", 0.7)], false)]);
    assert_eq!(Study::result(&events), json!({"told": ["t2", "t1"]}));
    let single = json!({"type": "tell", "trial_id": "t1", "value": 0.7});
    assert_eq!(
        when(&study, single).unwrap(),
        vec![told(&[("t1", 0.7)], false)]
    );
}

#[test]
fn tell_of_an_unknown_trial_refuses_the_whole_command() {
    let study = given(&[created(5), asked(1..=2)]);
    let command = json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 0.5}, {"trial_id": "t9", "value": 0.7}]});
    let e = rejected(&study, command);
    assert_eq!(e.code, ErrorCode::UnknownTrial);
    assert_eq!(
        e.message,
        "tell: unknown trial \"t9\": this study handed out t1..t2"
    );
    for id in ["t0", "t01", "x", ""] {
        let e = rejected(&study, json!({"type": "tell", "trial_id": id, "value": 1}));
        assert_eq!(e.code, ErrorCode::UnknownTrial, "{id}");
    }
}

#[test]
fn tell_refuses_non_finite_values_and_costs() {
    let study = given(&[created(5), asked(1..=1)]);
    for command in [
        tell_one(f64::NAN, None),
        tell_one(f64::INFINITY, None),
        tell_one(1.0, Some(f64::NEG_INFINITY)),
    ] {
        let e = study.decide(&command).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(
            e.message.contains("trial t1 must be finite"),
            "{}",
            e.message
        );
    }
}

#[test]
fn telling_the_same_outcome_again_changes_nothing() {
    let study = given(&[created(5), asked(1..=2), told(&[("t1", 0.5)], false)]);
    let repeat = json!({"type": "tell", "trial_id": "t1", "value": 0.5});
    let events = when(&study, repeat).unwrap();
    assert!(events.is_empty());
    assert_eq!(
        Study::result(&events),
        json!({"told": [], "failed": [], "renewed": [], "expired": []})
    );
    let partly_new = json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 0.5}, {"trial_id": "t2", "value": 0.25},
        {"trial_id": "t2", "value": 0.25}]});
    assert_eq!(
        when(&study, partly_new).unwrap(),
        vec![told(&[("t2", 0.25)], false)]
    );
}

#[test]
fn telling_a_different_outcome_is_invalid_state() {
    let study = given(&[created(5), asked(1..=1), told(&[("t1", 0.5)], false)]);
    let e = rejected(
        &study,
        json!({"type": "tell", "trial_id": "t1", "value": 0.6}),
    );
    assert_eq!(e.code, ErrorCode::InvalidState);
    assert_eq!(
        e.message,
        "tell: trial t1 was already told value 0.5; refusing value 0.6"
    );
    let e = study.decide(&tell_one(0.5, Some(3.0))).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidState);
}

#[test]
fn conflicting_results_in_one_tell_are_invalid() {
    let study = given(&[created(5), asked(1..=1)]);
    let command = json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 0.5}, {"trial_id": "t1", "value": 0.6}]});
    assert_eq!(rejected(&study, command).code, ErrorCode::InvalidField);
}

#[test]
fn tells_after_stop_are_recorded() {
    let stopped = SolverEvent::StudyStopped { reason: None };
    let study = given(&[created(2), asked(1..=2), stopped.clone()]);
    let command = json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 1}, {"trial_id": "t2", "value": 2}]});
    let events = when(&study, command).unwrap();
    assert_eq!(events, vec![told(&[("t1", 1.0), ("t2", 2.0)], false)]);
    let after = given(&[created(2), asked(1..=2), stopped, events[0].clone()]);
    assert_eq!(after.status(), Some(StudyStatus::Stopped));
    assert_eq!(after.best().unwrap().trial.trial_id, "t1");
}

#[test]
fn the_last_tell_of_a_fully_asked_budget_completes_the_study() {
    let study = given(&[created(2), asked(1..=2), told(&[("t1", 1.0)], false)]);
    let events = when(
        &study,
        json!({"type": "tell", "trial_id": "t2", "value": 3}),
    )
    .unwrap();
    assert_eq!(events, vec![told(&[("t2", 3.0)], true)]);
    let done = study.evolve(&events[0]);
    assert_eq!(done.status(), Some(StudyStatus::Completed));
    assert!(done.is_done());
}

#[test]
fn telling_every_asked_trial_before_the_budget_is_asked_does_not_complete() {
    let study = given(&[created(3), asked(1..=2), told(&[("t1", 1.0)], false)]);
    let events = when(
        &study,
        json!({"type": "tell", "trial_id": "t2", "value": 3}),
    )
    .unwrap();
    assert_eq!(events, vec![told(&[("t2", 3.0)], false)]);
}
