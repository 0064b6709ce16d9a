//! `fail`: failed trials, repeats, completion by failure, late results for
//! failed trials, and snapshots from before failures.

use super::*;

#[test]
fn fail_records_failed_trials() {
    let study = given(&[created(5), asked(1..=3)]);
    let command = json!({"type": "fail", "failures": [
        {"trial_id": "t2", "reason": "exit 3"}, {"trial_id": "t1"}]});
    let events = when(&study, command).unwrap();
    assert_eq!(
        events,
        vec![failed(&[("t2", Some("exit 3")), ("t1", None)], false)]
    );
    assert_eq!(Study::result(&events), json!({"failed": ["t2", "t1"]}));
    let after = study.evolve(&events[0]);
    assert_eq!(after.trial("t2").unwrap().state(), TrialState::Failed);
    assert_eq!(after.trial("t3").unwrap().state(), TrialState::Asked);
    let view = after.view();
    let counts = json!({"budget": 5, "asked": 3, "told": 0, "failed": 2, "pruned": 0, "seeded": 0, "queued": 0, "stale": 0, "running": 1, "pending": 1, "remaining": 2});
    assert_eq!(view["counts"], counts);
    assert_eq!(view["trials"][1]["state"], "failed");
    assert_eq!(view["trials"][1]["failure"], json!({"reason": "exit 3"}));
    assert_eq!(view["trials"][0]["failure"], json!({"reason": null}));
    assert_eq!(view["best"], Value::Null);
}

#[test]
fn fail_of_an_unknown_trial_refuses_the_whole_command() {
    let study = given(&[created(5), asked(1..=2)]);
    let command = json!({"type": "fail", "failures": [{"trial_id": "t1"}, {"trial_id": "t3"}]});
    let e = rejected(&study, command);
    assert_eq!(e.code, ErrorCode::UnknownTrial);
    assert_eq!(
        e.message,
        "fail: unknown trial \"t3\": this study handed out t1..t2"
    );
}

#[test]
fn failing_a_told_trial_is_invalid_state() {
    let study = given(&[created(5), asked(1..=2), told(&[("t1", 0.5)], false)]);
    let command = json!({"type": "fail", "failures": [{"trial_id": "t2"}, {"trial_id": "t1"}]});
    let e = rejected(&study, command);
    assert_eq!(e.code, ErrorCode::InvalidState);
    assert_eq!(
        e.message,
        "fail: trial t1 was already told value 0.5; a result is never withdrawn"
    );
}

#[test]
fn failing_again_changes_nothing_whatever_the_reason() {
    let study = given(&[
        created(5),
        asked(1..=2),
        failed(&[("t1", Some("a"))], false),
    ]);
    for reason in ["a", "b"] {
        let events = when(
            &study,
            json!({"type": "fail", "trial_id": "t1", "reason": reason}),
        );
        assert_eq!(events.unwrap(), vec![]);
    }
    let command = json!({"type": "fail", "failures": [
        {"trial_id": "t1"}, {"trial_id": "t2", "reason": "x"}, {"trial_id": "t2", "reason": "y"}]});
    assert_eq!(
        when(&study, command).unwrap(),
        vec![failed(&[("t2", Some("x"))], false)]
    );
    let again = study.evolve(&failed(&[("t1", Some("b"))], false));
    assert_eq!(
        again
            .trial("t1")
            .unwrap()
            .failure
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("a")
    );
    assert_eq!(again.view()["counts"]["failed"], 1);
}

#[test]
fn the_last_failure_of_a_fully_asked_budget_completes_the_study() {
    let study = given(&[
        created(3),
        asked(1..=3),
        told(&[("t1", 1.0)], false),
        failed(&[("t2", None)], false),
    ]);
    let events = when(&study, json!({"type": "fail", "trial_id": "t3"})).unwrap();
    assert_eq!(events, vec![failed(&[("t3", None)], true)]);
    let done = study.clone().evolve(&events[0]);
    assert_eq!(done.status(), Some(StudyStatus::Completed));
    assert!(done.is_done());
    assert_eq!(done.best().unwrap().trial.trial_id, "t1");
    let ask = when(&done, json!({"type": "ask"})).unwrap();
    assert_eq!(Study::result(&ask), json!({"trials": [], "done": true}));
    // A tell may finish it just as well.
    let events = when(
        &study,
        json!({"type": "tell", "trial_id": "t3", "value": 2}),
    )
    .unwrap();
    assert_eq!(events, vec![told(&[("t3", 2.0)], true)]);
}

#[test]
fn a_study_whose_trials_all_fail_completes_without_a_best() {
    let study = given(&[created(2), asked(1..=2)]);
    let events = when(
        &study,
        json!({"type": "fail", "failures": [{"trial_id": "t1"}, {"trial_id": "t2"}]}),
    )
    .unwrap();
    assert_eq!(events, vec![failed(&[("t1", None), ("t2", None)], true)]);
    let done = study.evolve(&events[0]);
    assert_eq!(done.status(), Some(StudyStatus::Completed));
    assert!(done.best().is_none());
}

#[test]
fn failing_every_asked_trial_before_the_budget_is_asked_does_not_complete() {
    let study = given(&[created(3), asked(1..=2)]);
    let events = when(
        &study,
        json!({"type": "fail", "failures": [{"trial_id": "t1"}, {"trial_id": "t2"}]}),
    )
    .unwrap();
    assert_eq!(events, vec![failed(&[("t1", None), ("t2", None)], false)]);
    let after = study.evolve(&events[0]);
    let next = when(&after, json!({"type": "ask", "n": 5})).unwrap();
    assert_eq!(next, vec![asked(3..=3)]);
}

#[test]
fn a_late_result_for_a_failed_trial_completes_it() {
    let study = given(&[
        created(2),
        asked(1..=2),
        told(&[("t1", 1.0)], false),
        failed(&[("t2", Some("timed out"))], true),
    ]);
    assert_eq!(study.status(), Some(StudyStatus::Completed));
    let events = when(
        &study,
        json!({"type": "tell", "trial_id": "t2", "value": 0.5}),
    )
    .unwrap();
    // Recorded, not lost; it finishes nothing new, the study was complete already.
    assert_eq!(events, vec![told(&[("t2", 0.5)], false)]);
    let after = study.evolve(&events[0]);
    let record = after.trial("t2").unwrap();
    assert_eq!(record.state(), TrialState::Completed);
    assert_eq!(
        record.failure.as_ref().unwrap().reason.as_deref(),
        Some("timed out")
    );
    assert_eq!(after.best().unwrap().trial.trial_id, "t2");
    let view = after.view();
    assert_eq!(view["counts"]["told"], 2);
    assert_eq!(view["counts"]["failed"], 0);
    assert_eq!(view["trials"][1]["state"], "completed");
    assert_eq!(view["status"], "completed");
    // Once completed it cannot fail again; the same result is a repeat.
    assert_eq!(
        rejected(&after, json!({"type": "fail", "trial_id": "t2"})).code,
        ErrorCode::InvalidState
    );
    assert_eq!(
        when(
            &after,
            json!({"type": "tell", "trial_id": "t2", "value": 0.5})
        )
        .unwrap(),
        vec![]
    );
}

#[test]
fn a_late_result_on_a_running_study_does_not_complete_it_early() {
    let study = given(&[created(2), asked(1..=2), failed(&[("t1", None)], false)]);
    let events = when(
        &study,
        json!({"type": "tell", "trial_id": "t1", "value": 0.5}),
    )
    .unwrap();
    assert_eq!(events, vec![told(&[("t1", 0.5)], false)]);
    let both = json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 0.5}, {"trial_id": "t2", "value": 0.7}]});
    assert_eq!(
        when(&study, both).unwrap(),
        vec![told(&[("t1", 0.5), ("t2", 0.7)], true)]
    );
}

#[test]
fn failures_after_stop_are_recorded() {
    let stopped = SolverEvent::StudyStopped { reason: None };
    let study = given(&[created(2), asked(1..=1), stopped]);
    let events = when(&study, json!({"type": "fail", "trial_id": "t1"})).unwrap();
    assert_eq!(events, vec![failed(&[("t1", None)], false)]);
    let after = study.evolve(&events[0]);
    assert_eq!(after.status(), Some(StudyStatus::Stopped));
    assert_eq!(after.trial("t1").unwrap().state(), TrialState::Failed);
}

#[test]
fn snapshots_from_before_failures_still_read() {
    let study = given(&[created(3), asked(1..=2), told(&[("t1", 1.0)], false)]);
    let mut stored = serde_json::to_value(&study).unwrap();
    let state = stored["state"].as_object_mut().unwrap();
    assert!(state.remove("failed").is_some());
    assert!(state["trials"][0].get("failure").is_none());
    let read: Study = serde_json::from_value(stored).unwrap();
    assert_eq!(read, study);
}
