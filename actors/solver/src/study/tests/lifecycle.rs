//! `create_study` and `stop`, and what a study shows: its result, view and
//! event tags.

use super::*;

#[test]
fn create_records_the_config() {
    let command = json!({"type": "create_study", "seed": 42, "budget": 3, "probe_ratio": 0.2,
        "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "LOG"},
                   "momentum": {"min": 0.8, "max": 0.99}}});
    // No sampler named: `auto`, written into the event with the revision
    // of its rule.
    let config = StudyConfig {
        auto_rule: Some(AUTO_RULE),
        ..config_with(3, Sampler::Auto)
    };
    assert_eq!(
        when(&given(&[]), command).unwrap(),
        vec![SolverEvent::StudyCreated { config }]
    );
}

#[test]
fn an_auto_study_keeps_the_rule_it_was_recorded_with() {
    // Ten dimensions, budget 50: rule 1 runs TPE, rule 2 GP; both start
    // from the same Sobol design, so compare after it.
    let bounds: BTreeMap<String, Bound> = (0..10)
        .map(|i| (format!("x{i}"), Bound::new(0.0, 1.0, Scale::Linear)))
        .collect();
    let recorded = |auto_rule| StudyConfig {
        seed: 5,
        budget: 50,
        bounds: bounds.clone(),
        sampler: Sampler::Auto,
        auto_rule,
        ..Default::default()
    };
    let next_after_design = |config: StudyConfig| {
        let mut study = given(&[SolverEvent::StudyCreated { config }]);
        for number in 1..=12 {
            let (asked, _) = step(study, json!({"type": "ask"}));
            let x = asked.trials()[number - 1].trial.params["x0"]
                .as_f64()
                .unwrap();
            let tell = json!({"type": "tell", "trial_id": trial_id(number as u64), "value": x});
            study = step(asked, tell).0;
        }
        study.trials()[11].trial.params.clone()
    };
    // A config recorded before revisions (none) runs rule 1, as it did.
    let old = next_after_design(recorded(None));
    assert_eq!(old, next_after_design(recorded(Some(1))));
    assert_ne!(old, next_after_design(recorded(Some(2))));
    // Giving the rule pins it; a wrong one, or one without auto, is refused.
    let e = StudyConfig {
        auto_rule: Some(AUTO_RULE + 1),
        ..recorded(None)
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "auto_rule must be in 1..={AUTO_RULE}, got {}",
            AUTO_RULE + 1
        )
    );
    let e = StudyConfig {
        sampler: Sampler::Tpe,
        ..recorded(Some(1))
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        e.message,
        "auto_rule: only for sampler auto, got sampler tpe"
    );
    let pinned = StudyConfig {
        auto_rule: Some(1),
        ..recorded(None)
    };
    assert_eq!(pinned.as_recorded(), pinned);
}

#[test]
fn create_validates_the_config() {
    let command = json!({"type": "create_study", "seed": 1, "budget": 3,
        "bounds": {"lr": {"min": 0.1, "max": 0.01}}});
    let e = rejected(&given(&[]), command);
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert_eq!(e.message, "bounds.lr: min 0.1 must be below max 0.01");
    let zero_budget = json!({"type": "create_study", "seed": 1, "budget": 0, "bounds": {"x": {"min": 0, "max": 1}}});
    assert_eq!(
        rejected(&given(&[]), zero_budget).code,
        ErrorCode::InvalidField
    );
    let log_at_zero = json!({"type": "create_study", "seed": 1, "budget": 1,
        "bounds": {"x": {"min": 0, "max": 1, "scale": "log"}}});
    let e = rejected(&given(&[]), log_at_zero);
    assert_eq!(e.message, "bounds.x: log scale needs min > 0, got 0");
}

#[test]
fn create_twice_is_already_exists() {
    let e = given(&[created(3)])
        .decide(&SolverCommand::CreateStudy(config(3)))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists);
}

#[test]
fn other_commands_need_the_study() {
    for command in [
        json!({"type": "ask"}),
        json!({"type": "tell", "trial_id": "t1", "value": 1.0}),
        json!({"type": "fail", "trial_id": "t1"}),
        json!({"type": "stop"}),
    ] {
        let e = rejected(&given(&[]), command.clone());
        assert_eq!(e.code, ErrorCode::NotFound, "{command}");
        assert!(e.message.starts_with(command["type"].as_str().unwrap()));
    }
}

#[test]
fn stop_stops_a_running_study_once() {
    let study = given(&[created(3)]);
    let events = when(&study, json!({"type": "stop", "reason": "budget cut"})).unwrap();
    let stopped = SolverEvent::StudyStopped {
        reason: Some("budget cut".into()),
    };
    assert_eq!(events, vec![stopped.clone()]);
    let result = json!({"status": "stopped", "reason": "budget cut"});
    assert_eq!(Study::result(&events), result);
    let e = rejected(&given(&[created(3), stopped]), json!({"type": "stop"}));
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            ErrorCode::InvalidState,
            "stop: the study is already stopped"
        )
    );
    let completed = given(&[created(1), asked(1..=1), told(&[("t1", 1.0)], true)]);
    assert_eq!(
        rejected(&completed, json!({"type": "stop"})).code,
        ErrorCode::InvalidState
    );
}

#[test]
fn create_result_is_the_config() {
    let result = Study::result(&[created(3)]);
    assert_eq!(result, json!({"config": config(3)}));
}

#[test]
fn view_shows_status_counts_trials_and_the_best_trial() {
    let study = given(&[
        created(4),
        asked(1..=3),
        told(&[("t2", 0.5), ("t1", 0.9)], false),
        told(&[("t3", 0.5)], false),
    ]);
    let view = study.view();
    assert_eq!(view["status"], "running");
    assert_eq!(view["done"], false);
    let counts = json!({"budget": 4, "asked": 3, "told": 3, "failed": 0, "pruned": 0, "seeded": 0, "queued": 0, "stale": 0, "running": 0, "pending": 0, "remaining": 1});
    assert_eq!(view["counts"], counts);
    assert_eq!(view["best"]["trial_id"], "t2");
    assert_eq!(view["best"]["value"], 0.5);
    assert_eq!(view["trials"][0]["state"], "completed");
    assert_eq!(view["trials"][0]["params"], json!(trial(1).params));
    assert_eq!(view["config"], json!(config(4)));
    let running = given(&[created(4), asked(1..=1)]).view();
    assert_eq!(running["trials"][0]["state"], "asked");
    assert_eq!(running["trials"][0]["value"], Value::Null);
    assert_eq!(running["best"], Value::Null);
    assert_eq!(Study::default().view(), json!({"status": "not_created"}));
}

#[test]
fn event_type_is_the_tag() {
    assert_eq!(Study::event_type(&created(1)), "study_created");
    assert_eq!(Study::event_type(&asked(1..=1)), "trials_asked");
}
