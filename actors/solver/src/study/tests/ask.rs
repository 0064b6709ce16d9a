//! `ask`: numbered trials, the batch size, the remaining budget and a
//! stopped or completed study.

use super::*;

#[test]
fn ask_hands_out_numbered_trials_sampled_from_seed_and_number() {
    let events = when(&given(&[created(10)]), json!({"type": "ask", "n": 2})).unwrap();
    assert_eq!(events, vec![asked(1..=2)]);
    let later = when(&given(&[created(10), asked(1..=2)]), json!({"type": "ask"})).unwrap();
    assert_eq!(later, vec![asked(3..=3)]);
}

#[test]
fn ask_n_must_be_between_1_and_1000() {
    let study = given(&[created(5000)]);
    for n in [0, 1001] {
        let e = rejected(&study, json!({"type": "ask", "n": n}));
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(
            e.message,
            format!("ask: n must be between 1 and 1000, got {n}")
        );
    }
    let events = when(&study, json!({"type": "ask", "n": 1000})).unwrap();
    assert_eq!(events, vec![asked(1..=1000)]);
}

#[test]
fn ask_is_capped_by_the_remaining_budget() {
    let events = when(
        &given(&[created(3), asked(1..=2)]),
        json!({"type": "ask", "n": 5}),
    );
    assert_eq!(events.unwrap(), vec![asked(3..=3)]);
}

#[test]
fn ask_after_the_budget_is_empty_and_not_done_while_trials_run() {
    let study = given(&[created(2), asked(1..=2), told(&[("t1", 1.0)], false)]);
    let events = when(&study, json!({"type": "ask", "n": 4})).unwrap();
    let expected = SolverEvent::TrialsAsked {
        trials: vec![],
        study_done: false,
        retried: vec![],
        lease_until: None,
    };
    assert_eq!(events, vec![expected]);
    assert_eq!(Study::result(&events), json!({"trials": [], "done": false}));
}

#[test]
fn ask_on_a_completed_study_is_empty_and_done() {
    let study = given(&[created(1), asked(1..=1), told(&[("t1", 1.0)], true)]);
    let events = when(&study, json!({"type": "ask"})).unwrap();
    assert_eq!(Study::result(&events), json!({"trials": [], "done": true}));
}

#[test]
fn ask_on_a_stopped_study_is_invalid_state() {
    let stopped = SolverEvent::StudyStopped {
        reason: Some("enough".into()),
    };
    let e = rejected(&given(&[created(5), stopped]), json!({"type": "ask"}));
    assert_eq!(e.code, ErrorCode::InvalidState);
    assert_eq!(e.message, "ask: the study is stopped (enough)");
}

#[test]
fn ask_result_lists_the_trials() {
    let events = vec![asked(1..=1)];
    let expected = json!({"done": false, "trials": [{
        "trial_id": "t1", "number": 1, "params": trial(1).params,
    }]});
    assert_eq!(Study::result(&events), expected);
}
