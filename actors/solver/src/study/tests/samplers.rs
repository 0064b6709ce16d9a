//! Samplers and search spaces: Sobol and grid points, every sampler on a
//! mixed space, the direction, and spaces refused by name.

use super::*;
use crate::samplers::testing::{bits, trial_bits};
use crate::samplers::{grid::Grid, sobol};

/// Asks `asks` in turn, evolving after each; returns the study and log.
fn ask_in_turn(created: SolverEvent, asks: &[u32]) -> (Study, Vec<SolverEvent>) {
    let mut study = given(std::slice::from_ref(&created));
    let mut log = vec![created];
    for &n in asks {
        let events = when(&study, json!({"type": "ask", "n": n})).unwrap();
        study = events.iter().fold(study, Study::evolve);
        log.extend(events);
    }
    (study, log)
}

#[test]
fn a_sobol_study_hands_out_the_scrambled_sobol_points_and_replays_them() {
    let command = json!({"type": "create_study", "seed": 42, "budget": 16, "sampler": "Sobol", "probe_ratio": 0.2,
        "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"},
                   "momentum": {"min": 0.8, "max": 0.99}}});
    let created = when(&given(&[]), command).unwrap().remove(0);
    assert_eq!(
        created,
        SolverEvent::StudyCreated {
            config: config_with(16, Sampler::Sobol)
        }
    );
    let (study, log) = ask_in_turn(created, &[3, 5, 8]);
    let config = study.config().unwrap();
    let (lr, momentum) = (&config.bounds["lr"], &config.bounds["momentum"]);
    assert_eq!(study.trials().len(), 16);
    for record in study.trials() {
        let u = sobol::point(42, record.trial.number, 2);
        let expected = BTreeMap::from([
            ("lr".to_string(), lr.value_at(u[0])),
            ("momentum".to_string(), momentum.value_at(u[1])),
        ]);
        assert_eq!(record.trial.params, expected, "{}", record.trial.trial_id);
    }
    // 16 Sobol points: exactly half of the learning rates lie below the
    // geometric middle of the range, a quarter in each quarter-decade band.
    let below = study
        .trials()
        .iter()
        .filter(|r| r.trial.params["lr"].as_f64().unwrap() < 10f64.powf(-3.0))
        .count();
    assert_eq!(below, 8);
    let replayed = given(&log);
    assert_eq!(replayed, study);
    assert_eq!(bits(&replayed), bits(&study));
    // Asking in other batch sizes gives the same trials.
    let (other, _) = ask_in_turn(log[0].clone(), &[1, 15]);
    assert_eq!(bits(&other), bits(&study));
}

#[test]
fn a_grid_study_never_repeats_a_point_within_its_budget() {
    let created = SolverEvent::StudyCreated {
        config: config_with(10, Sampler::Grid),
    };
    let (study, log) = ask_in_turn(created, &[4, 4, 4]);
    assert_eq!(study.trials().len(), 10);
    let grid = Grid::for_budget(10, 2);
    assert_eq!(grid.levels(), [4, 3]);
    let mut points: Vec<Vec<u64>> = trial_bits(&study);
    points.sort();
    points.dedup();
    assert_eq!(points.len(), 10);
    let momentum = config(0).bounds["momentum"].clone();
    for record in study.trials() {
        let u = grid.point(42, record.trial.number);
        assert_eq!(record.trial.params["momentum"], momentum.value_at(u[1]));
    }
    assert_eq!(bits(&given(&log)), bits(&study));
}

#[test]
fn every_sampler_hands_out_valid_mixed_params() {
    for sampler in Sampler::ALL {
        let created = when(&Study::default(), mixed_space(sampler, 40)).unwrap();
        let study = run_to_budget(given(&created), mixed_score);
        let config = study.config().unwrap().clone();
        assert_eq!(study.trials().len(), 40, "{sampler}");
        for record in study.trials() {
            let params = &record.trial.params;
            for (name, value) in params {
                assert_eq!(
                    config.bounds[name].normalize(value).as_ref(),
                    Ok(value),
                    "{sampler} {name}"
                );
            }
            let optimizer = params["optimizer"].to_string();
            assert_eq!(
                params.contains_key("momentum"),
                optimizer != "adam",
                "{sampler} {params:?}"
            );
            assert_eq!(
                params.contains_key("nesterov"),
                optimizer == "sgd",
                "{sampler} {params:?}"
            );
        }
        let choices: std::collections::BTreeSet<String> = study
            .trials()
            .iter()
            .map(|r| r.trial.params["optimizer"].to_string())
            .collect();
        assert!(
            choices.len() >= 2,
            "{sampler} explores the choices: {choices:?}"
        );
    }
}

#[test]
fn a_maximising_study_keeps_the_highest_value_as_best() {
    let created = when(&Study::default(), mixed_space(Sampler::Random, 3)).unwrap();
    let mut study = given(&created);
    study = when(&study, json!({"type": "ask", "n": 3}))
        .unwrap()
        .iter()
        .fold(study, Study::evolve);
    let tell = json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 1.0}, {"trial_id": "t2", "value": 3.0}, {"trial_id": "t3", "value": 2.0}]});
    study = when(&study, tell)
        .unwrap()
        .iter()
        .fold(study, Study::evolve);
    assert_eq!(study.best().unwrap().trial.trial_id, "t2");
}

#[test]
fn tpe_finds_the_better_region_of_a_mixed_space() {
    let best = |sampler: Sampler| {
        let created = when(&Study::default(), mixed_space(sampler, 60)).unwrap();
        let study = run_to_budget(given(&created), mixed_score);
        study.best().unwrap().outcome.as_ref().unwrap().value
    };
    let (tpe, random) = (best(Sampler::Tpe), best(Sampler::Random));
    assert!(tpe >= random, "tpe {tpe} vs random {random}");
    assert!(tpe > 0.5, "tpe found sgd near the optimum: {tpe}");
}

#[test]
fn a_bad_space_is_refused_naming_the_parameter() {
    let cases = [
        (
            json!({"x": {"min": 2, "max": 1}}),
            "bounds.x: min 2 must be below max 1",
        ),
        (
            json!({"x": {"min": 0, "max": 1, "scale": "log"}}),
            "bounds.x: log scale needs min > 0, got 0",
        ),
        (json!({}), "bounds: at least one parameter is required"),
        (
            json!({"x": {"min": 0, "max": 1, "scale": "cubic"}}),
            "unknown scale \"cubic\"",
        ),
        (
            json!({"x": {"type": "categorical", "choices": []}}),
            "bounds.x: choices must not be empty",
        ),
        (
            json!({"x": {"min": 0, "max": 1, "condition": {"parent": "y", "values": [1]}}}),
            "bounds.x.condition: parent \"y\" is not a parameter",
        ),
    ];
    for (bounds, expected) in cases {
        let command = json!({"type": "create_study", "seed": 1, "budget": 5, "bounds": bounds});
        let error = CommandRequest::from_value(command, None)
            .unwrap()
            .parse::<SolverCommand>("solver", Study::COMMAND_TYPES)
            .and_then(|c| Study::default().decide(&c))
            .unwrap_err();
        assert!(
            error.message.contains(expected),
            "{bounds}: {}",
            error.message
        );
    }
}
