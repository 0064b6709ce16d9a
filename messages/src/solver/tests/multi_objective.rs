//! Multi-objective studies and constraints on the wire: `directions`,
//! results with `values` and `constraints`, and old results unchanged.

use super::*;
use crate::codec::Encoding;
use serde_json::json;

fn tell_results(body: Value) -> Vec<TrialResult> {
    match parse(body).unwrap() {
        SolverCommand::Tell(tell) => tell.results,
        other => panic!("not a tell: {other:?}"),
    }
}

#[test]
fn a_single_objective_result_is_written_as_it_always_was() {
    let result = TrialResult {
        cost: Some(2.0),
        ..TrialResult::single("t1", 0.5)
    };
    let written = serde_json::to_value(&result).unwrap();
    assert_eq!(
        written,
        json!({"trial_id": "t1", "value": 0.5, "cost": 2.0})
    );
    let event = SolverEvent::TrialsTold {
        results: vec![result],
        completes_study: false,
    };
    let old = r#"{"type":"trials_told","results":[{"trial_id":"t1","value":0.5,"cost":2.0}],"completes_study":false}"#;
    assert_eq!(serde_json::to_string(&event).unwrap(), old);
    assert_eq!(serde_json::from_str::<SolverEvent>(old).unwrap(), event);
}

#[test]
fn a_result_carries_values_and_constraints_in_both_forms() {
    let listed = tell_results(json!({"type": "tell", "results": [
        {"trial_id": "t1", "values": [0.5, 3.0], "constraints": [-1.0, 0.25]}
    ]}));
    let single = tell_results(json!({"type": "tell", "trial_id": "t1",
        "values": [0.5, 3.0], "constraints": [-1.0, 0.25]}));
    assert_eq!(listed, single);
    let result = &listed[0];
    assert_eq!(result.objectives(), &[0.5, 3.0]);
    assert_eq!(result.value, 0.5);
    assert_eq!(result.constraints, vec![-1.0, 0.25]);
    assert!(!result.is_feasible());
    assert_eq!(violation(&result.constraints), 0.25);
    assert_eq!(
        serde_json::to_value(result).unwrap(),
        json!({"trial_id": "t1", "values": [0.5, 3.0], "constraints": [-1.0, 0.25]})
    );
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let bytes = encoding.encode(result).unwrap();
        assert_eq!(&encoding.decode::<TrialResult>(&bytes).unwrap(), result);
    }
    // A constrained single-objective result.
    let constrained = tell_results(json!({"type": "tell", "trial_id": "t2", "value": 1.0,
        "constraints": [0.0]}));
    assert!(constrained[0].is_feasible());
    assert!(constrained[0].values.is_empty());
}

#[test]
fn a_one_element_values_reads_as_value() {
    let one = tell_results(json!({"type": "tell", "trial_id": "t1", "values": [0.5]}));
    assert_eq!(one[0], TrialResult::single("t1", 0.5));
}

#[test]
fn a_result_needs_exactly_one_of_value_and_values() {
    for body in [
        json!({"type": "tell", "trial_id": "t1", "value": 1.0, "values": [1.0, 2.0]}),
        json!({"type": "tell", "trial_id": "t1", "values": []}),
        json!({"type": "tell", "results": [{"trial_id": "t1"}]}),
        json!({"type": "tell", "results": [{"trial_id": "t1", "values": []}]}),
        json!({"type": "tell", "trial_id": "t1", "constraints": [1.0]}),
        json!({"type": "tell", "trial_id": "t1", "values": vec![0.0; 17]}),
        json!({"type": "tell", "trial_id": "t1", "value": 0.0, "constraints": vec![0.0; 65]}),
    ] {
        let refusal = parse(body.clone()).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::InvalidField, "{body}");
    }
    let both = parse(json!({"type": "tell", "trial_id": "t1", "value": 1.0, "values": [1.0, 2.0]}))
        .unwrap_err();
    assert!(
        both.message.contains("either `value` or `values`"),
        "{}",
        both.message
    );
}

#[test]
fn same_outcome_covers_values_and_constraints() {
    let a = TrialResult::with_values("t1", vec![1.0, 2.0]).unwrap();
    let mut b = a.clone();
    assert!(a.same_outcome(&b));
    b.values[1] = 3.0;
    assert!(!a.same_outcome(&b));
    let mut c = a.clone();
    c.constraints = vec![0.5];
    assert!(!a.same_outcome(&c));
}

fn mo_config(directions: Value) -> Result<StudyConfig, Rejection> {
    let body = json!({"type": "create_study", "seed": 1, "budget": 10,
        "bounds": {"x": {"min": 0.0, "max": 1.0}}, "directions": directions});
    match parse(body)? {
        SolverCommand::CreateStudy(config) => Ok(config),
        other => panic!("not a create: {other:?}"),
    }
}

#[test]
fn directions_are_read_checked_and_written_only_when_given() {
    let config = mo_config(json!(["minimize", "maximize"])).unwrap();
    assert_eq!(
        config.directions,
        vec![Direction::Minimize, Direction::Maximize]
    );
    assert!(config.is_multi_objective());
    assert_eq!(config.objectives(), 2);
    assert!(config.validate().is_ok());
    let written = serde_json::to_value(&config).unwrap();
    assert_eq!(written["directions"], json!(["minimize", "maximize"]));
    assert!(serde_json::to_value(lr_config())
        .unwrap()
        .get("directions")
        .is_none());
    // One direction is `direction`.
    let one = mo_config(json!(["maximize"])).unwrap().normalised();
    assert_eq!(
        (one.direction, one.directions.len()),
        (Direction::Maximize, 0)
    );
    // Too many, or both fields.
    let many = mo_config(json!(vec!["minimize"; 17])).unwrap();
    assert!(many
        .validate()
        .unwrap_err()
        .message
        .starts_with("directions: at most 16"));
    // A one-element `directions` against a `direction` is refused as
    // recorded too, not silently merged.
    let conflicting = StudyConfig {
        direction: Direction::Maximize,
        ..mo_config(json!(["minimize"])).unwrap()
    }
    .as_recorded();
    assert!(conflicting
        .validate()
        .unwrap_err()
        .message
        .contains("not both"));
    let both = StudyConfig {
        direction: Direction::Maximize,
        ..mo_config(json!(["minimize", "minimize"])).unwrap()
    };
    assert!(both
        .validate()
        .unwrap_err()
        .message
        .starts_with("directions:"));
}

#[test]
fn cmaes_gp_and_pruners_refuse_several_objectives() {
    let two = mo_config(json!(["minimize", "minimize"])).unwrap();
    for sampler in [Sampler::Cmaes, Sampler::Gp] {
        let config = StudyConfig {
            sampler,
            ..two.clone()
        };
        let message = config.validate().unwrap_err().message;
        assert!(message.starts_with(&format!("sampler: {sampler} supports a single objective")));
        assert!(message.contains("nsga2, tpe, auto"), "{message}");
    }
    for sampler in [Sampler::Nsga2, Sampler::Tpe, Sampler::Auto, Sampler::Random] {
        let config = StudyConfig {
            sampler,
            ..two.clone()
        };
        assert!(config.validate().is_ok(), "{sampler}");
    }
    let pruned = StudyConfig {
        pruner: Some(Pruner::Median {
            n_startup_trials: 5,
            n_warmup_steps: 0,
            interval_steps: 1,
        }),
        ..two
    };
    assert!(pruned
        .validate()
        .unwrap_err()
        .message
        .starts_with("pruner:"));
}

#[test]
fn nsga2_is_read_and_checks_its_knobs() {
    let mut config = StudyConfig {
        sampler: Sampler::parse("NSGA2").unwrap(),
        ..mo_config(json!(["minimize", "minimize"])).unwrap()
    };
    assert_eq!(config.sampler, Sampler::Nsga2);
    assert!(Sampler::Nsga2.reads_history());
    for (key, bad, expected) in [
        ("population_size", 1.0, "a whole number in 2..=10000"),
        ("crossover_prob", 1.5, "in [0, 1]"),
        ("swapping_prob", -0.1, "in [0, 1]"),
        ("mutation_prob", 2.0, "in [0, 1]"),
    ] {
        config.strategy_params = BTreeMap::from([(key.to_string(), bad)]);
        let message = config.validate().unwrap_err().message;
        assert_eq!(
            message,
            format!("strategy_params.{key}: nsga2 needs {expected}, got {bad}")
        );
    }
    config.strategy_params = BTreeMap::from([("population_size".to_string(), 20.0)]);
    assert!(config.validate().is_ok());
}

#[test]
fn no_constraints_and_feasible_ones_violate_by_the_same_zero() {
    assert_eq!(violation(&[]).to_bits(), 0.0f64.to_bits());
    assert_eq!(violation(&[-1.0, 0.0]).to_bits(), 0.0f64.to_bits());
    assert_eq!(violation(&[2.0, -1.0, 0.5]), 2.5);
}
