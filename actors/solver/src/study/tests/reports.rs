//! `report` and the pruners: median and ASHA decisions, checks, and the
//! prune that completes the study.

use super::*;

fn pruned_study(pruner: Value) -> Study {
    let create = json!({"type": "create_study", "seed": 1, "budget": 10,
                        "bounds": {"x": {"min": 0, "max": 1}}, "pruner": pruner});
    let (study, _) = step(Study::default(), create);
    step(study, json!({"type": "ask", "n": 10})).0
}

#[test]
fn median_pruner_stops_a_trial_worse_than_the_median_at_its_step() {
    let mut study = pruned_study(json!({"type": "median", "n_startup_trials": 3}));
    for (i, id) in ["t1", "t2", "t3"].iter().enumerate() {
        for s in 0..3 {
            study = report(study, id, s, i as f64 + 1.0).0;
        }
        study = step(
            study,
            json!({"type": "tell", "trial_id": id, "value": i as f64 + 1.0}),
        )
        .0;
    }
    let (study, action) = report(study, "t4", 0, 1.5);
    assert_eq!(action, "continue");
    let (study, action) = report(study, "t5", 0, 2.5);
    assert_eq!(action, "prune");
    let record = study.trial("t5").unwrap();
    assert_eq!(
        (record.state(), record.pruned_at),
        (TrialState::Pruned, Some(0))
    );
    assert_eq!(study.view()["counts"]["pruned"], 1);
    // A pruned trial reports no more; failing it changes nothing; a
    // late final value is still recorded.
    let refused = when(
        &study,
        json!({"type": "report", "trial_id": "t5", "step": 1, "value": 0.1}),
    )
    .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidState);
    assert!(
        refused.message.contains("pruned at step 0"),
        "{}",
        refused.message
    );
    assert!(when(&study, json!({"type": "fail", "trial_id": "t5"}))
        .unwrap()
        .is_empty());
    let (study, _) = step(
        study,
        json!({"type": "tell", "trial_id": "t5", "value": 2.5}),
    );
    assert_eq!(study.trial("t5").unwrap().state(), TrialState::Completed);
    assert_eq!(study.view()["counts"]["pruned"], 0);
}

#[test]
fn asha_promotes_the_best_third_and_follows_the_direction() {
    let create = json!({"type": "create_study", "seed": 1, "budget": 9, "direction": "maximize",
                        "bounds": {"x": {"min": 0, "max": 1}}, "pruner": {"type": "asha"}});
    let (mut study, _) = step(Study::default(), create);
    study = step(study, json!({"type": "ask", "n": 9})).0;
    let mut actions = Vec::new();
    for (k, score) in [0.5, 0.9, 0.1, 0.2, 0.3, 0.95].iter().enumerate() {
        let (next, action) = report(study, &format!("t{}", k + 1), 1, *score);
        study = next;
        actions.push(action);
    }
    // Higher is better: t1 leads, t2 and t6 beat everyone before them;
    // with six at the rung only the best two go on.
    assert_eq!(
        actions,
        ["continue", "continue", "prune", "prune", "prune", "continue"]
    );
}

#[test]
fn reports_are_checked_and_recorded_without_a_pruner() {
    let study = pruned_study(Value::Null);
    let (study, action) = report(study, "t1", 4, 0.3);
    assert_eq!(action, "continue");
    assert_eq!(study.trial("t1").unwrap().reports[&4], 0.3);
    let cases = [
        (
            json!({"type": "report", "trial_id": "t99", "step": 1, "value": 1.0}),
            ErrorCode::UnknownTrial,
        ),
        (
            json!({"type": "report", "trial_id": "t1", "step": 4, "value": 0.4}),
            ErrorCode::InvalidState,
        ),
        (
            json!({"type": "report", "trial_id": "t1", "step": 1}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type": "report", "trial_id": "t1", "step": -1, "value": 1.0}),
            ErrorCode::InvalidField,
        ),
    ];
    for (command, code) in cases {
        let error = CommandRequest::from_value(command.clone(), None)
            .unwrap()
            .parse::<SolverCommand>("solver", Study::COMMAND_TYPES)
            .and_then(|c| study.decide(&c))
            .unwrap_err();
        assert_eq!(error.code, code, "{command}: {error}");
    }
}

#[test]
fn pruning_the_last_open_trial_completes_the_study() {
    let create = json!({"type": "create_study", "seed": 1, "budget": 2,
                        "bounds": {"x": {"min": 0, "max": 1}},
                        "pruner": {"type": "median", "n_startup_trials": 1}});
    let (study, _) = step(Study::default(), create);
    let (study, _) = step(study, json!({"type": "ask", "n": 2}));
    let (study, _) = report(study, "t1", 1, 1.0);
    let (study, _) = step(
        study,
        json!({"type": "tell", "trial_id": "t1", "value": 1.0}),
    );
    let (study, action) = report(study, "t2", 1, 5.0);
    assert_eq!(action, "prune");
    assert_eq!(study.status(), Some(StudyStatus::Completed));
}
