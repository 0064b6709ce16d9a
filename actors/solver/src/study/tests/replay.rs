//! Replay: random sessions keep the rules and fold back to the same study,
//! bit for bit, from the log, a snapshot or stored JSON text.

use super::*;
use crate::samplers::testing::bits;
use flotilla_messages::solver::Heartbeat;
use proptest::prelude::*;

/// A random command, as a client might send it.
fn command() -> impl Strategy<Value = SolverCommand> {
    let tell = proptest::collection::vec((1u64..14, 0u8..4), 1..4).prop_map(|picks| {
        let results = picks
            .into_iter()
            .map(|(number, value)| result(&trial_id(number), f64::from(value)))
            .collect();
        SolverCommand::Tell(Tell { results })
    });
    let fail = proptest::collection::vec(1u64..14, 1..3).prop_map(|numbers| {
        let failures = numbers
            .into_iter()
            .map(|number| TrialFailure {
                trial_id: trial_id(number),
                reason: None,
            })
            .collect();
        SolverCommand::Fail(Fail { failures })
    });
    let sampler = proptest::sample::select(Sampler::ALL.to_vec());
    prop_oneof![
        (1u64..12, sampler, 0u32..3).prop_map(|(budget, sampler, max_retries)| {
            SolverCommand::CreateStudy(StudyConfig {
                max_retries,
                ..config_with(budget, sampler)
            })
        }),
        (0u32..5).prop_map(|n| SolverCommand::Ask { n, lease: None }),
        (1u32..4, 0u64..20, proptest::option::of(1u64..4)).prop_map(|(n, now, lease_seconds)| {
            SolverCommand::Ask {
                n,
                lease: Some(Lease {
                    now: now * 1000,
                    seconds: lease_seconds,
                }),
            }
        }),
        (proptest::collection::vec(1u64..14, 1..3), 0u64..20).prop_map(|(numbers, now)| {
            SolverCommand::Heartbeat(Heartbeat {
                trial_ids: numbers.into_iter().map(trial_id).collect(),
                now: now * 1000,
                lease_seconds: Some(2),
            })
        }),
        (0u64..30).prop_map(|now| SolverCommand::Expire { now: now * 1000 }),
        tell.clone(),
        tell,
        fail,
        Just(SolverCommand::Stop { reason: None }),
    ]
}

/// Runs `commands` like the host: decide, then evolve what was accepted.
fn run(commands: &[SolverCommand]) -> (Study, Vec<SolverEvent>) {
    let mut study = Study::default();
    let mut log = Vec::new();
    for command in commands {
        let Ok(events) = study.decide(command) else {
            continue;
        };
        assert!(events.len() <= 1, "one event per command");
        study = events.iter().fold(study, Study::evolve);
        log.extend(events);
    }
    (study, log)
}

proptest! {
    #[test]
    fn random_sessions_keep_the_rules_and_replay_exactly(
        commands in proptest::collection::vec(command(), 0..40)
    ) {
        let (study, log) = run(&commands);
        let replayed = given(&log);
        prop_assert_eq!(&replayed, &study);
        prop_assert_eq!(bits(&replayed), bits(&study));
        let snapshot: Study = serde_json::from_value(serde_json::to_value(&study).unwrap()).unwrap();
        prop_assert_eq!(&snapshot, &study);
        if let Some(config) = study.config() {
            prop_assert!(study.trials().len() as u64 <= config.budget);
            for (i, record) in study.trials().iter().enumerate() {
                prop_assert_eq!(record.trial.number, i as u64 + 1);
                // TPE's points depend on the history as it was; the rest on the number alone.
                if !config.sampler.reads_history() {
                    let expected = sample_params(config, i as u64 + 1, &History::default());
                    prop_assert_eq!(&record.trial.params, &expected);
                }
            }
            // Finished: told, failed, or stale with no retry left.
            let finished = study
                .trials()
                .iter()
                .filter(|r| match r.state() {
                    TrialState::Asked => false,
                    TrialState::Stale => r.retries >= config.max_retries,
                    TrialState::Completed | TrialState::Failed | TrialState::Pruned => true,
                })
                .count() as u64;
            let all_finished = finished == config.budget;
            let completed = study.status() == Some(StudyStatus::Completed);
            prop_assert!(!completed || all_finished);
            if study.status() == Some(StudyStatus::Running) {
                prop_assert!(!all_finished);
            }
            if let Some(best) = study.best() {
                prop_assert_eq!(best.state(), TrialState::Completed);
            }
            let view = study.view();
            let count = |state| study.trials().iter().filter(|r| r.state() == state).count();
            prop_assert_eq!(&view["counts"]["failed"], &json!(count(TrialState::Failed)));
            prop_assert_eq!(&view["counts"]["stale"], &json!(count(TrialState::Stale)));
            prop_assert_eq!(&view["counts"]["running"], &json!(count(TrialState::Asked)));
            prop_assert_eq!(&view["counts"]["told"], &json!(count(TrialState::Completed)));
            for record in study.trials() {
                prop_assert!(record.retries <= config.max_retries);
            }
        }
    }
}

#[test]
fn replay_from_stored_json_text_is_bit_identical() {
    let mut study = given(&[created(200)]);
    let mut log = vec![created(200)];
    for _ in 0..20 {
        let events = study
            .decide(&SolverCommand::Ask { n: 10, lease: None })
            .unwrap();
        study = events.iter().fold(study, Study::evolve);
        log.extend(events);
    }
    let stored: Vec<String> = log
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let decoded: Vec<SolverEvent> = stored
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    assert_eq!(bits(&given(&decoded)), bits(&study));
}
