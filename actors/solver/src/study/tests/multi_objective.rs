//! Multi-objective studies and constraints: the shape of results, the
//! Pareto front, the feasible best, idempotent repeats, views, snapshots
//! and bit-exact replays of NSGA-II and MOTPE under parallel asks.

use super::*;
use crate::samplers::testing::{self, assert_replays_exactly_with, Order};

fn mo_create(sampler: &str, budget: u64) -> Value {
    json!({"type": "create_study", "seed": 5, "budget": budget, "sampler": sampler,
        "directions": ["minimize", "maximize"],
        "bounds": {"x": {"min": 0.0, "max": 1.0}, "y": {"min": 0.0, "max": 1.0}}})
}

/// A two-objective study with `n` trials asked.
fn mo_study(n: u32) -> Study {
    let (study, _) = step(Study::default(), mo_create("random", 20));
    step(study, json!({"type": "ask", "n": n})).0
}

fn tell(study: Study, results: Value) -> Study {
    step(study, json!({"type": "tell", "results": results})).0
}

fn front_ids(study: &Study) -> Vec<String> {
    study
        .best_trials()
        .iter()
        .map(|r| r.trial.trial_id.clone())
        .collect()
}

#[test]
fn results_must_match_the_directions() {
    let study = mo_study(2);
    let one = rejected(
        &study,
        json!({"type": "tell", "trial_id": "t1", "value": 1.0}),
    );
    assert_eq!(one.code, ErrorCode::InvalidField);
    assert!(
        one.message
            .starts_with("tell: values of trial t1: expected 2"),
        "{}",
        one.message
    );
    assert!(one.message.ends_with("got 1"), "{}", one.message);
    let three = rejected(
        &study,
        json!({"type": "tell", "trial_id": "t1", "values": [1.0, 2.0, 3.0]}),
    );
    assert!(three.message.contains("expected 2") && three.message.ends_with("got 3"));
    for (values, constraints, field) in [
        (vec![1.0, f64::NAN], vec![], "values"),
        (vec![1.0, 2.0], vec![f64::INFINITY], "constraints"),
    ] {
        let results = vec![TrialResult {
            constraints,
            ..TrialResult::with_values("t1", values).unwrap()
        }];
        let refusal = study
            .decide(&SolverCommand::Tell(Tell { results }))
            .unwrap_err();
        assert_eq!(refusal.code, ErrorCode::InvalidField);
        assert!(refusal
            .message
            .starts_with(&format!("tell: {field} of trial t1 must be finite")));
    }
    // A single-objective study refuses `values`.
    let single = given(&[created(5), asked(1..=1)]);
    let refusal = rejected(
        &single,
        json!({"type": "tell", "trial_id": "t1", "values": [1.0, 2.0]}),
    );
    assert!(refusal
        .message
        .contains("expected 1 objective value(s) (give `value`), got 2"));
}

#[test]
fn every_result_carries_as_many_constraints_as_the_first() {
    let study = mo_study(4);
    let mixed = rejected(
        &study,
        json!({"type": "tell", "results": [
            {"trial_id": "t1", "values": [1.0, 2.0], "constraints": [0.0]},
            {"trial_id": "t2", "values": [1.0, 2.0]}]}),
    );
    assert_eq!(mixed.code, ErrorCode::InvalidField);
    assert!(
        mixed
            .message
            .starts_with("tell: constraints of trial t2: expected 1"),
        "{}",
        mixed.message
    );
    let study = tell(
        study,
        json!([{"trial_id": "t1", "values": [1.0, 2.0], "constraints": [-1.0, 0.5]}]),
    );
    let later = rejected(
        &study,
        json!({"type": "tell", "trial_id": "t2", "values": [1.0, 2.0], "constraints": [0.0]}),
    );
    assert!(
        later.message.contains("expected 2 value(s)"),
        "{}",
        later.message
    );
    // The fixed count survives a snapshot.
    let snapshot: Study = serde_json::from_str(&serde_json::to_string(&study).unwrap()).unwrap();
    assert_eq!(snapshot, study);
    assert!(when(
        &snapshot,
        json!({"type": "tell", "trial_id": "t2", "values": [1.0, 2.0], "constraints": [0.0]})
    )
    .is_err());
}

#[test]
fn the_front_holds_the_feasible_non_dominated_trials_in_trial_order() {
    // Minimise the first objective, maximise the second.
    let study = tell(
        mo_study(6),
        json!([
            {"trial_id": "t3", "values": [2.0, 5.0], "constraints": [0.0]},
            {"trial_id": "t1", "values": [1.0, 1.0], "constraints": [-1.0]},
            {"trial_id": "t2", "values": [3.0, 4.0], "constraints": [-1.0]},
            {"trial_id": "t4", "values": [0.5, 9.0], "constraints": [0.1]},
        ]),
    );
    // t2 is dominated by t3; t4 dominates all but is infeasible.
    assert_eq!(front_ids(&study), ["t1", "t3"]);
    assert!(study.best().is_none());
    // A new trial dominating t1 replaces it.
    let study = tell(
        study,
        json!([{"trial_id": "t5", "values": [0.9, 1.5], "constraints": [-2.0]}]),
    );
    assert_eq!(front_ids(&study), ["t3", "t5"]);
    let view = study.view();
    let front: Vec<&str> = view["best_trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trial_id"].as_str().unwrap())
        .collect();
    assert_eq!(front, ["t3", "t5"]);
    let t4 = &view["trials"][3];
    assert_eq!(t4["values"], json!([0.5, 9.0]));
    assert_eq!(t4["value"], json!(0.5));
    assert_eq!(t4["constraints"], json!([0.1]));
    assert_eq!(t4["feasible"], json!(false));
    // Snapshots and replays rebuild the front.
    let snapshot: Study = serde_json::from_str(&serde_json::to_string(&study).unwrap()).unwrap();
    assert_eq!(front_ids(&snapshot), ["t3", "t5"]);
}

#[test]
fn repeats_cover_values_and_constraints() {
    let study = tell(
        mo_study(2),
        json!([{"trial_id": "t1", "values": [1.0, 2.0], "constraints": [0.5]}]),
    );
    let same =
        json!({"type": "tell", "trial_id": "t1", "values": [1.0, 2.0], "constraints": [0.5]});
    assert_eq!(when(&study, same).unwrap(), vec![]);
    let other_value = rejected(
        &study,
        json!({"type": "tell", "trial_id": "t1", "values": [1.0, 3.0], "constraints": [0.5]}),
    );
    assert_eq!(other_value.code, ErrorCode::InvalidState);
    assert_eq!(
        other_value.message,
        "tell: trial t1 was already told values [1.0, 2.0] with constraints [0.5]; \
         refusing values [1.0, 3.0] with constraints [0.5]"
    );
    let other_constraint = rejected(
        &study,
        json!({"type": "tell", "trial_id": "t1", "values": [1.0, 2.0], "constraints": [0.0]}),
    );
    assert_eq!(other_constraint.code, ErrorCode::InvalidState);
    let twice = rejected(
        &study,
        json!({"type": "tell", "results": [
        {"trial_id": "t2", "values": [1.0, 2.0], "constraints": [0.0]},
        {"trial_id": "t2", "values": [1.0, 2.0], "constraints": [1.0]}]}),
    );
    assert_eq!(twice.code, ErrorCode::InvalidField);
}

#[test]
fn the_best_single_objective_trial_is_the_best_feasible_one() {
    let study = given(&[created(5), asked(1..=3)]);
    let study = step(
        study,
        json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 0.1, "constraints": [0.2]},
        {"trial_id": "t2", "value": 0.5, "constraints": [-0.2]},
        {"trial_id": "t3", "value": 0.3, "constraints": [0.0]}]}),
    )
    .0;
    assert_eq!(study.best().unwrap().trial.trial_id, "t3");
    assert_eq!(front_ids(&study), ["t3"]);
    assert!(study.view().get("best_trials").is_none());
}

#[test]
fn create_reads_one_direction_as_direction_and_refuses_bad_samplers() {
    let body = json!({"type": "create_study", "seed": 1, "budget": 4, "directions": ["maximize"],
        "bounds": {"x": {"min": 0.0, "max": 1.0}}});
    let events = when(&Study::default(), body).unwrap();
    let SolverEvent::StudyCreated { config } = &events[0] else {
        panic!("not created")
    };
    assert_eq!(
        config.direction,
        flotilla_messages::solver::Direction::Maximize
    );
    assert!(config.directions.is_empty());
    let cmaes = rejected(&Study::default(), mo_create("cmaes", 10));
    assert_eq!(cmaes.code, ErrorCode::InvalidField);
    assert!(cmaes
        .message
        .starts_with("sampler: cmaes supports a single objective"));
    // No seeds in a multi-objective study.
    let seed = rejected(
        &mo_study(1),
        json!({"type": "seed", "trials": [{"params": {"x": 0.5, "y": 0.5}, "value": 1.0}]}),
    );
    assert_eq!(seed.code, ErrorCode::InvalidField);
    assert!(seed.message.starts_with("seed: a study of 2 objectives"));
}

/// ZDT1-like in two parameters, with a constraint `x + y ≥ 0.3`.
fn zdt_like(id: &str, p: &BTreeMap<String, f64>) -> TrialResult {
    let (x, y) = (p["x"], p["y"]);
    let g = 1.0 + 9.0 * y;
    let f2 = g * (1.0 - (x / g).sqrt());
    TrialResult {
        constraints: vec![0.3 - x - y],
        ..TrialResult::with_values(id, vec![x, -f2]).unwrap()
    }
}

#[test]
fn nsga2_and_motpe_studies_replay_bit_for_bit() {
    for sampler in ["nsga2", "tpe", "auto"] {
        let mut create = mo_create(sampler, 60);
        create["strategy_params"] = json!({"population_size": 8});
        let SolverCommand::CreateStudy(config) =
            serde_json::from_value::<SolverCommand>(create).unwrap()
        else {
            panic!("not a create")
        };
        assert_replays_exactly_with(config, zdt_like);
    }
}

/// The median total violation of a study's trials after the 40th, and
/// its best feasible first objective.
fn late_violation_and_best(study: &Study) -> (f64, f64) {
    let outcomes: Vec<&crate::study::Outcome> = study
        .trials()
        .iter()
        .map(|r| r.outcome.as_ref().unwrap())
        .collect();
    let mut late: Vec<f64> = outcomes[40..]
        .iter()
        .map(|o| flotilla_messages::solver::violation(&o.constraints))
        .collect();
    late.sort_by(f64::total_cmp);
    let best = outcomes
        .iter()
        .filter(|o| o.is_feasible())
        .map(|o| o.value)
        .fold(f64::INFINITY, f64::min);
    (late[late.len() / 2], best)
}

#[test]
fn constrained_samplers_move_to_the_feasible_region() {
    // Minimise x² + y² (or x and y) subject to x + y ≥ 1.2: the optimum
    // (0.72 at x = y = 0.6) lies on the boundary, so a sampler that
    // prefers feasible points ends up near it; random trials violate it
    // by about 0.2 half the time.
    let run = |sampler: &str, directions: Value| {
        // NSGA-II with generations of 10, so 80 trials make several.
        let create = json!({"type": "create_study", "seed": 9, "budget": 80, "sampler": sampler,
            "directions": directions, "strategy_params": {"population_size": 10},
            "bounds": {"x": {"min": 0.0, "max": 1.0}, "y": {"min": 0.0, "max": 1.0}}});
        let SolverCommand::CreateStudy(config) =
            serde_json::from_value::<SolverCommand>(create).unwrap()
        else {
            panic!("not a create")
        };
        let multi = config.is_multi_objective();
        let (study, _) = testing::run_with(config, 1, Order::Together, |id, p| {
            let (x, y) = (p["x"], p["y"]);
            let values = if multi {
                vec![x, y]
            } else {
                vec![x * x + y * y]
            };
            TrialResult {
                constraints: vec![1.2 - x - y],
                ..TrialResult::with_values(id, values).unwrap()
            }
        });
        late_violation_and_best(&study)
    };
    let (random, _) = run("random", json!(["minimize"]));
    assert!(random > 0.1, "{random}");
    for (sampler, directions) in [
        ("tpe", json!(["minimize"])),
        ("cmaes", json!(["minimize"])),
        ("gp", json!(["minimize"])),
        ("tpe", json!(["minimize", "minimize"])),
        ("nsga2", json!(["minimize", "minimize"])),
    ] {
        let (violation, best) = run(sampler, directions.clone());
        assert!(
            violation < 0.05,
            "{sampler} {directions}: median violation {violation}"
        );
        // The model-based samplers also get close to the optimum (CMA-ES,
        // 6 per generation, needs more than 80 trials).
        if ["tpe", "gp"].contains(&sampler) && directions.as_array().unwrap().len() == 1 {
            assert!(best < 0.76, "{sampler}: best feasible {best}");
        }
    }
}
