//! Every command, event and part round-trips through JSON and MessagePack,
//! and every command through the request path (proptest).

use super::*;
use crate::codec::Encoding;
use proptest::prelude::*;
use serde::Serialize;
use std::fmt;

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |v| v.is_finite())
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_]{1,8}"
}

fn scale() -> impl Strategy<Value = Scale> {
    prop_oneof![Just(Scale::Linear), Just(Scale::Log), Just(Scale::Periodic)]
}

fn sampler() -> impl Strategy<Value = Sampler> {
    proptest::sample::select(Sampler::ALL.to_vec())
}

fn bound() -> impl Strategy<Value = Bound> {
    (finite(), finite(), scale()).prop_map(|(min, max, scale)| Bound::new(min, max, scale))
}

fn config() -> impl Strategy<Value = StudyConfig> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::btree_map(name(), bound(), 0..4),
        proptest::option::of(finite()),
        proptest::collection::btree_map(name(), finite(), 0..3),
        (sampler(), 0u32..4),
    )
        .prop_map(
            |(seed, budget, bounds, probe_ratio, strategy_params, (sampler, max_retries))| {
                StudyConfig {
                    seed,
                    budget,
                    bounds,
                    probe_ratio,
                    strategy_params,
                    sampler,
                    max_retries,
                    directions: if seed % 3 == 0 {
                        vec![Direction::Minimize, Direction::Maximize]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                }
            },
        )
}

fn result() -> impl Strategy<Value = TrialResult> {
    (
        "t[1-9][0-9]{0,4}",
        proptest::collection::vec(finite(), 1..4),
        proptest::collection::vec(finite(), 0..3),
        proptest::option::of(finite()),
    )
        .prop_map(|(trial_id, values, constraints, cost)| TrialResult {
            constraints,
            cost,
            ..TrialResult::with_values(trial_id, values).expect("one value at least")
        })
}

fn param_value() -> impl Strategy<Value = ParamValue> {
    prop_oneof![
        any::<i64>().prop_map(ParamValue::Int),
        finite().prop_map(ParamValue::Float),
        any::<bool>().prop_map(ParamValue::Bool),
        ".{0,8}".prop_map(ParamValue::Text),
    ]
}

fn failure() -> impl Strategy<Value = TrialFailure> {
    ("t[1-9][0-9]{0,4}", proptest::option::of(".{0,12}"))
        .prop_map(|(trial_id, reason)| TrialFailure { trial_id, reason })
}

fn params() -> impl Strategy<Value = Params> {
    proptest::collection::btree_map(name(), param_value(), 0..4)
}

fn trial() -> impl Strategy<Value = Trial> {
    (1..u64::MAX, params()).prop_map(|(number, params)| Trial {
        trial_id: trial_id(number),
        number,
        params,
    })
}

fn command() -> impl Strategy<Value = SolverCommand> {
    let results = proptest::collection::vec(result(), 1..4);
    prop_oneof![
        config().prop_map(SolverCommand::CreateStudy),
        any::<u32>().prop_map(|n| SolverCommand::Ask { n, lease: None }),
        (
            any::<u32>(),
            any::<u64>(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(n, now, lease_seconds)| SolverCommand::Ask {
                n,
                lease: Some(Lease {
                    now,
                    seconds: lease_seconds
                })
            }),
        (
            proptest::collection::vec("t[1-9]", 1..3),
            any::<u64>(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(trial_ids, now, lease_seconds)| {
                SolverCommand::Heartbeat(Heartbeat {
                    trial_ids,
                    now,
                    lease_seconds,
                })
            }),
        any::<u64>().prop_map(|now| SolverCommand::Expire { now }),
        results.prop_map(|results| SolverCommand::Tell(Tell { results })),
        proptest::collection::vec(failure(), 1..4)
            .prop_map(|failures| SolverCommand::Fail(Fail { failures })),
        proptest::option::of(".{0,12}").prop_map(|reason| SolverCommand::Stop { reason }),
        ("t[1-9]", any::<u64>(), finite()).prop_map(|(trial_id, step, value)| {
            SolverCommand::Report(Report {
                trial_id,
                step,
                value,
            })
        }),
        proptest::collection::vec((params(), finite(), proptest::option::of(finite())), 1..3)
            .prop_map(|trials| SolverCommand::Seed(SeedTrials {
                trials: trials
                    .into_iter()
                    .map(|(params, value, cost)| PriorResult {
                        params,
                        value,
                        cost
                    })
                    .collect()
            })),
        proptest::collection::vec(params(), 1..3).prop_map(|candidates| {
            SolverCommand::Enqueue(Enqueue {
                candidates,
                rollback_to: None,
                reason: None,
            })
        }),
    ]
}

fn event() -> impl Strategy<Value = SolverEvent> {
    prop_oneof![
        config().prop_map(|config| SolverEvent::StudyCreated { config }),
        (
            proptest::collection::vec(trial(), 0..4),
            any::<bool>(),
            proptest::collection::vec(trial(), 0..2),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(trials, study_done, retried, lease_until)| {
                SolverEvent::TrialsAsked {
                    trials,
                    study_done,
                    retried,
                    lease_until,
                }
            }),
        (proptest::collection::vec("t[1-9]", 0..3), any::<u64>()).prop_map(
            |(trial_ids, lease_until)| SolverEvent::LeasesRenewed {
                trial_ids,
                lease_until
            }
        ),
        (
            proptest::collection::vec("t[1-9]", 0..3),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(trial_ids, now, completes_study)| {
                SolverEvent::TrialsExpired {
                    trial_ids,
                    now,
                    completes_study,
                }
            }),
        (proptest::collection::vec(result(), 0..4), any::<bool>()).prop_map(
            |(results, completes_study)| SolverEvent::TrialsTold {
                results,
                completes_study
            }
        ),
        (proptest::collection::vec(failure(), 0..4), any::<bool>()).prop_map(
            |(failures, completes_study)| SolverEvent::TrialsFailed {
                failures,
                completes_study
            }
        ),
        proptest::option::of(".{0,12}").prop_map(|reason| SolverEvent::StudyStopped { reason }),
        (
            "t[1-9]",
            any::<u64>(),
            finite(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(trial_id, step, value, prune, completes_study)| {
                SolverEvent::TrialReported {
                    trial_id,
                    step,
                    value,
                    action: if prune {
                        PruneAction::Prune
                    } else {
                        PruneAction::Continue
                    },
                    completes_study,
                }
            }),
        (
            proptest::collection::vec(trial(), 0..3),
            proptest::collection::vec(result(), 0..3)
        )
            .prop_map(|(trials, results)| SolverEvent::TrialsSeeded { trials, results }),
        proptest::collection::vec(params(), 0..3).prop_map(|candidates| {
            SolverEvent::CandidatesEnqueued {
                candidates,
                rollback_to: None,
                reason: None,
            }
        }),
    ]
}

fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
{
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let bytes = encoding.encode(value).unwrap();
        let back: T = encoding.decode(&bytes).unwrap();
        prop_assert_eq!(&back, value, "{:?}", encoding);
    }
    Ok(())
}

proptest! {
    #[test]
    fn commands_round_trip(cmd in command()) {
        round_trips(&cmd)?;
    }

    #[test]
    fn events_round_trip(event in event()) {
        round_trips(&event)?;
    }

    #[test]
    fn parts_round_trip(config in config(), trial in trial(), result in result(), s in scale(), sampler in sampler()) {
        round_trips(&config)?;
        round_trips(&sampler)?;
        round_trips(&trial)?;
        round_trips(&result)?;
        round_trips(&s)?;
        round_trips(&Tell { results: vec![result] })?;
    }

    #[test]
    fn commands_parse_through_the_request_path(cmd in command()) {
        let value = serde_json::to_value(&cmd).unwrap();
        prop_assert_eq!(parse(value).unwrap(), cmd);
    }
}
