//! `create_study`'s config: ArqonHPO's fields, scales, samplers and their
//! knobs, retries, and what `validate` says.

use super::*;
use crate::codec::Encoding;
use serde_json::json;

#[test]
fn create_study_reads_arqon_config() {
    let cmd = parse(json!({
        "type": "create_study", "seed": 7, "budget": 10,
        "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "Log"}},
        "command_id": "c1", "expected_seq": 0
    }))
    .unwrap();
    assert_eq!(cmd, SolverCommand::CreateStudy(lr_config()));
}

#[test]
fn create_study_keeps_probe_ratio_and_strategy_params() {
    let cmd = parse(json!({
        "type": "create_study", "seed": 1, "budget": 5,
        "bounds": {"x": {"min": 0, "max": 1}},
        "probe_ratio": 0.2, "strategy_params": {"gamma": 0.25}
    }))
    .unwrap();
    let SolverCommand::CreateStudy(config) = cmd else {
        panic!("not a create")
    };
    assert_eq!(config.probe_ratio, Some(0.2));
    assert_eq!(config.strategy_params["gamma"], 0.25);
    assert_eq!(config.bounds["x"].scale, Scale::Linear);
}

#[test]
fn scale_is_read_in_any_case_and_written_lowercase() {
    for (text, scale) in [
        ("Linear", Scale::Linear),
        ("linear", Scale::Linear),
        ("LOG", Scale::Log),
        ("log", Scale::Log),
        ("Periodic", Scale::Periodic),
    ] {
        assert_eq!(serde_json::from_value::<Scale>(json!(text)).unwrap(), scale);
        assert_eq!(serde_json::to_value(scale).unwrap(), json!(scale.as_str()));
    }
    let err = serde_json::from_value::<Scale>(json!("cubic")).unwrap_err();
    assert!(err.to_string().contains("unknown scale \"cubic\""), "{err}");
}

#[test]
fn sampler_defaults_to_auto_and_is_read_in_any_case() {
    let create = |extra: Value| -> Result<Sampler, Rejection> {
        let mut body = json!({"type": "create_study", "seed": 1, "budget": 5,
                              "bounds": {"x": {"min": 0, "max": 1}}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        match parse(body)? {
            SolverCommand::CreateStudy(config) => Ok(config.sampler),
            other => panic!("not a create: {other:?}"),
        }
    };
    assert_eq!(create(json!({})).unwrap(), Sampler::Auto);
    for (text, sampler) in [
        ("random", Sampler::Random),
        ("Sobol", Sampler::Sobol),
        ("SOBOL", Sampler::Sobol),
        ("grid", Sampler::Grid),
        ("Grid", Sampler::Grid),
        ("tpe", Sampler::Tpe),
        ("TPE", Sampler::Tpe),
        ("Tpe", Sampler::Tpe),
    ] {
        assert_eq!(create(json!({ "sampler": text })).unwrap(), sampler);
        assert_eq!(
            serde_json::to_value(sampler).unwrap(),
            json!(sampler.as_str())
        );
    }
    for (text, sampler) in [
        ("cmaes", Sampler::Cmaes),
        ("CMAES", Sampler::Cmaes),
        ("Auto", Sampler::Auto),
    ] {
        assert_eq!(create(json!({ "sampler": text })).unwrap(), sampler);
    }
    let e = create(json!({"sampler": "bayes"})).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert_eq!(
        e.message,
        "create_study: sampler: unknown value \"bayes\": expected random, sobol, grid, tpe, cmaes, gp, nsga2 or auto"
    );
    let e = create(json!({"sampler": 3})).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert_eq!(
        e.message,
        "create_study: invalid type: integer `3`, \
         expected sampler: a name, one of random, sobol, grid, tpe, cmaes, gp, nsga2 or auto"
    );
}

#[test]
fn a_tpe_config_round_trips_and_checks_its_knobs() {
    let body = json!({"type": "create_study", "seed": 7, "budget": 10, "sampler": "TPE",
        "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"}},
        "strategy_params": {"n_startup_trials": 5, "n_ei_candidates": 48,
                            "gamma": 0.25, "multivariate": 1}});
    let SolverCommand::CreateStudy(config) = parse(body).unwrap() else {
        panic!("not a create")
    };
    assert_eq!(config.sampler, Sampler::Tpe);
    assert!(config.validate().is_ok());
    let value = serde_json::to_value(&config).unwrap();
    assert_eq!(value["sampler"], json!("tpe"));
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let bytes = encoding.encode(&config).unwrap();
        assert_eq!(encoding.decode::<StudyConfig>(&bytes).unwrap(), config);
    }
    let problem = |key: &str, v: f64| {
        let mut c = config.clone();
        c.strategy_params.insert(key.into(), v);
        c.validate().unwrap_err().message
    };
    assert_eq!(
        problem("multivariate", 2.0),
        "strategy_params.multivariate: tpe needs 0 or 1, got 2"
    );
    assert_eq!(
        problem("n_startup_trials", 2.5),
        "strategy_params.n_startup_trials: tpe needs a whole number >= 0, got 2.5"
    );
    assert!(problem("n_ei_candidates", 0.0).contains("1..=1000"));
    assert!(problem("n_ei_candidates", 1001.0).contains("1..=1000"));
    assert!(problem("gamma", 0.0).contains("in (0, 1]"));
    // Other samplers store the knobs unchecked, as ArqonHPO's configs carry them.
    let mut random = config.clone();
    random.sampler = Sampler::Random;
    random.strategy_params.insert("multivariate".into(), 7.0);
    assert!(random.validate().is_ok());
}

#[test]
fn cmaes_and_auto_configs_check_their_knobs() {
    let body = json!({"type": "create_study", "seed": 7, "budget": 10, "sampler": "cmaes",
        "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"}},
        "strategy_params": {"popsize": 12, "sigma0": 0.2, "restarts": 0}});
    let SolverCommand::CreateStudy(config) = parse(body).unwrap() else {
        panic!("not a create")
    };
    assert_eq!(config.sampler, Sampler::Cmaes);
    assert!(config.validate().is_ok());
    assert_eq!(
        serde_json::to_value(&config).unwrap()["sampler"],
        json!("cmaes")
    );
    let problem = |sampler: Sampler, key: &str, v: f64| {
        let mut c = config.clone();
        c.sampler = sampler;
        c.strategy_params.insert(key.into(), v);
        c.validate().map_err(|e| e.message)
    };
    assert_eq!(
        problem(Sampler::Cmaes, "popsize", 1.0).unwrap_err(),
        "strategy_params.popsize: cmaes needs a whole number in 2..=10000, got 1"
    );
    // TPE's knobs are not CMA-ES's business; auto checks both.
    assert!(problem(Sampler::Cmaes, "gamma", 7.0).is_ok());
    for (sampler, key, v, expected) in [
        (Sampler::Cmaes, "sigma0", 0.0, "cmaes needs in (0, 1]"),
        (Sampler::Cmaes, "restarts", 0.5, "cmaes needs 0 or 1"),
        (Sampler::Auto, "gamma", 7.0, "tpe needs in (0, 1]"),
        (Sampler::Auto, "popsize", 0.5, "cmaes needs a whole number"),
    ] {
        let message = problem(sampler, key, v).unwrap_err();
        assert!(message.contains(expected), "{message}");
    }
    assert!(Sampler::Cmaes.reads_history() && Sampler::Auto.reads_history());
    assert!(!Sampler::Sobol.reads_history());
}

#[test]
fn configs_and_events_without_a_sampler_still_read() {
    let old_event = json!({"type": "study_created", "config": {
        "seed": 7, "budget": 10, "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"}}}});
    let event: SolverEvent = serde_json::from_value(old_event).unwrap();
    assert_eq!(
        event,
        SolverEvent::StudyCreated {
            config: lr_config()
        }
    );
    let bytes = Encoding::MsgPack
        .encode(&json!({"seed": 7, "budget": 10,
                        "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "LOG"}}}))
        .unwrap();
    let config: StudyConfig = Encoding::MsgPack.decode(&bytes).unwrap();
    assert_eq!(config, lr_config());
}

#[test]
fn the_sampler_is_always_written() {
    let value = serde_json::to_value(lr_config()).unwrap();
    assert_eq!(value["sampler"], json!("auto"));
    let sobol = StudyConfig {
        sampler: Sampler::Sobol,
        ..lr_config()
    };
    let value = serde_json::to_value(&sobol).unwrap();
    assert_eq!(value["sampler"], json!("sobol"));
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let bytes = encoding.encode(&sobol).unwrap();
        assert_eq!(encoding.decode::<StudyConfig>(&bytes).unwrap(), sobol);
    }
}

#[test]
fn sobol_is_limited_to_the_direction_table() {
    let mut config = StudyConfig {
        sampler: Sampler::Sobol,
        ..lr_config()
    };
    let bound = config.bounds["lr"].clone();
    for i in 1..SOBOL_MAX_DIMENSIONS {
        config.bounds.insert(format!("p{i:02}"), bound.clone());
    }
    assert_eq!(config.bounds.len(), SOBOL_MAX_DIMENSIONS);
    assert!(config.validate().is_ok());
    config.bounds.insert("one_more".into(), bound);
    let e = config.validate().unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert_eq!(
        e.message,
        "sampler: sobol supports at most 32 parameters, got 33; use random, grid or tpe"
    );
    for sampler in [
        Sampler::Random,
        Sampler::Grid,
        Sampler::Tpe,
        Sampler::Cmaes,
        Sampler::Auto,
    ] {
        config.sampler = sampler;
        assert!(config.validate().is_ok(), "{sampler}");
    }
}

#[test]
fn max_retries_is_optional_checked_and_written_only_when_set() {
    let config = lr_config();
    assert!(serde_json::to_value(&config)
        .unwrap()
        .get("max_retries")
        .is_none());
    let retrying = StudyConfig {
        max_retries: 2,
        ..lr_config()
    };
    assert_eq!(
        serde_json::to_value(&retrying).unwrap()["max_retries"],
        json!(2)
    );
    assert!(retrying.validate().is_ok());
    let e = StudyConfig {
        max_retries: 101,
        ..lr_config()
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.message, "max_retries must be at most 100, got 101");
}

#[test]
fn validate_names_the_parameter_and_the_problem() {
    let message = |edit: fn(&mut StudyConfig)| {
        let mut config = lr_config();
        edit(&mut config);
        let e = config.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        e.message
    };
    assert!(lr_config().validate().is_ok());
    assert_eq!(
        message(|c| c.budget = 0),
        "budget must be at least 1, got 0"
    );
    assert!(message(|c| c.bounds.clear()).contains("at least one"));
    let blank = message(|c| {
        let b = c.bounds["lr"].clone();
        c.bounds.insert(" ".into(), b);
    });
    assert!(blank.contains("must not be blank"), "{blank}");
    let swapped = message(|c| {
        let b = c.bounds.get_mut("lr").unwrap();
        (b.min, b.max, b.scale) = (0.1, 0.01, Scale::Linear);
    });
    assert_eq!(swapped, "bounds.lr: min 0.1 must be below max 0.01");
    let nan = message(|c| c.bounds.get_mut("lr").unwrap().min = f64::NAN);
    assert_eq!(nan, "bounds.lr: min NaN must be finite");
    let inf = message(|c| c.bounds.get_mut("lr").unwrap().max = f64::INFINITY);
    assert_eq!(inf, "bounds.lr: max inf must be finite");
    let log = message(|c| c.bounds.get_mut("lr").unwrap().min = 0.0);
    assert_eq!(log, "bounds.lr: log scale needs min > 0, got 0");
    let ratio = message(|c| c.probe_ratio = Some(0.0));
    assert_eq!(ratio, "probe_ratio must be in (0, 1], got 0");
    assert!(message(|c| c.probe_ratio = Some(1.5)).contains("got 1.5"));
    let knob = message(|c| {
        c.strategy_params.insert("gamma".into(), f64::NAN);
    });
    assert_eq!(knob, "strategy_params.gamma: must be finite, got NaN");
}

#[test]
fn probe_ratio_of_one_is_valid() {
    let mut config = lr_config();
    config.probe_ratio = Some(1.0);
    assert!(config.validate().is_ok());
}

#[test]
fn a_recorded_study_is_resumed_by_its_config_whatever_its_auto_rule() {
    let given = StudyConfig {
        sampler: Sampler::Auto,
        ..lr_config()
    };
    let recorded_as = |auto_rule| StudyConfig {
        auto_rule,
        ..given.clone()
    };
    // Recorded today (rule 2), or before revisions (none: rule 1).
    assert!(given.same_study_as(&given.as_recorded()));
    assert!(given.same_study_as(&recorded_as(None)));
    // A config that pins a rule matches only that rule (absent is 1).
    let pinned = |rule| StudyConfig {
        auto_rule: Some(rule),
        ..given.clone()
    };
    assert!(pinned(1).same_study_as(&recorded_as(None)));
    assert!(!pinned(1).same_study_as(&recorded_as(Some(2))));
    assert!(pinned(2).same_study_as(&recorded_as(Some(2))));
    // Any other difference is another study.
    let other = StudyConfig {
        budget: given.budget + 1,
        ..given.as_recorded()
    };
    assert!(!given.same_study_as(&other));
}
