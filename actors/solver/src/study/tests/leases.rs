//! Leases: an `ask` with `now`, `heartbeat`, `expire`, retries of stale
//! trials, late results for them, and logs from before leases.

use super::*;

/// Trials `numbers` asked with a lease until `lease_until` (ms).
fn leased(numbers: std::ops::RangeInclusive<u64>, lease_until: u64) -> SolverEvent {
    SolverEvent::TrialsAsked {
        trials: numbers.map(trial).collect(),
        study_done: false,
        retried: vec![],
        lease_until: Some(lease_until),
    }
}

fn expired(ids: &[&str], now: u64, completes_study: bool) -> SolverEvent {
    SolverEvent::TrialsExpired {
        trial_ids: ids.iter().map(|id| id.to_string()).collect(),
        now,
        completes_study,
    }
}

fn created_retrying(budget: u64, max_retries: u32) -> SolverEvent {
    SolverEvent::StudyCreated {
        config: StudyConfig {
            max_retries,
            ..config(budget)
        },
    }
}

#[test]
fn an_ask_with_now_leases_its_trials() {
    let study = given(&[created(5)]);
    let events = when(
        &study,
        json!({"type": "ask", "n": 2, "now": 1000, "lease_seconds": 10}),
    )
    .unwrap();
    assert_eq!(events, vec![leased(1..=2, 11_000)]);
    let result = Study::result(&events);
    assert_eq!(result["lease_until"], 11_000);
    assert_eq!(result["trials"][1]["trial_id"], "t2");
    let after = study.clone().evolve(&events[0]);
    assert_eq!(after.trial("t1").unwrap().lease_until, Some(11_000));
    assert_eq!(after.view()["trials"][0]["lease_until"], 11_000);
    // One hour by default; without `now`, no lease.
    let default = when(&study, json!({"type": "ask", "now": 1000})).unwrap();
    assert_eq!(default, vec![leased(1..=1, 1000 + 3_600_000)]);
    let plain = when(&study, json!({"type": "ask"})).unwrap();
    assert_eq!(plain, vec![asked(1..=1)]);
    assert!(Study::result(&plain).get("lease_until").is_none());
}

#[test]
fn a_lease_must_be_between_a_second_and_thirty_days() {
    let study = given(&[created(5)]);
    for seconds in [0, 30 * 24 * 3600 + 1] {
        let e = rejected(
            &study,
            json!({"type": "ask", "now": 1, "lease_seconds": seconds}),
        );
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(
            e.message,
            format!("ask: lease_seconds must be between 1 and 2592000, got {seconds}")
        );
    }
    let e = rejected(&study, json!({"type": "ask", "now": u64::MAX}));
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert!(
        e.message.contains("now must be unix milliseconds"),
        "{}",
        e.message
    );
}

#[test]
fn heartbeat_renews_running_leases_only() {
    let study = given(&[
        created(5),
        leased(1..=4, 10_000),
        told(&[("t1", 1.0)], false),
        failed(&[("t2", None)], false),
        expired(&["t3"], 10_000, false),
    ]);
    let command = json!({"type": "heartbeat", "trial_ids": ["t1", "t2", "t3", "t4", "t4"],
                         "now": 9_000, "lease_seconds": 60});
    let events = when(&study, command.clone()).unwrap();
    let renewed = SolverEvent::LeasesRenewed {
        trial_ids: vec!["t4".into()],
        lease_until: 69_000,
    };
    assert_eq!(events, vec![renewed.clone()]);
    assert_eq!(
        Study::result(&events),
        json!({"renewed": ["t4"], "lease_until": 69_000})
    );
    let after = study.evolve(&renewed);
    assert_eq!(after.trial("t4").unwrap().lease_until, Some(69_000));
    assert_eq!(after.trial("t3").unwrap().state(), TrialState::Stale);
    // A repeat, or a heartbeat that would shorten the lease, records nothing.
    assert_eq!(when(&after, command).unwrap(), vec![]);
    let shorter =
        json!({"type": "heartbeat", "trial_ids": ["t4"], "now": 9_000, "lease_seconds": 1});
    assert_eq!(when(&after, shorter).unwrap(), vec![]);
    let e = rejected(
        &after,
        json!({"type": "heartbeat", "trial_ids": ["t4", "t9"], "now": 1}),
    );
    assert_eq!(e.code, ErrorCode::UnknownTrial);
    assert_eq!(
        e.message,
        "heartbeat: unknown trial \"t9\": this study handed out t1..t4"
    );
    let e = rejected(
        &after,
        json!({"type": "heartbeat", "trial_ids": [], "now": 1}),
    );
    assert_eq!(e.code, ErrorCode::InvalidField);
}

#[test]
fn expire_marks_ended_leases_stale_in_one_event() {
    let study = given(&[
        created(10),
        leased(1..=2, 5_000),
        leased(3..=3, 9_000),
        asked(4..=4),
        told(&[("t1", 1.0)], false),
    ]);
    assert_eq!(
        when(&study, json!({"type": "expire", "now": 4_999})).unwrap(),
        vec![]
    );
    let events = when(&study, json!({"type": "expire", "now": 5_000})).unwrap();
    assert_eq!(events, vec![expired(&["t2"], 5_000, false)]);
    assert_eq!(Study::result(&events), json!({"expired": ["t2"]}));
    let later = when(&study, json!({"type": "expire", "now": 1_000_000})).unwrap();
    // The trial without a lease never goes stale.
    assert_eq!(later, vec![expired(&["t2", "t3"], 1_000_000, false)]);
    let after = study.evolve(&later[0]);
    let view = after.view();
    assert_eq!(view["trials"][1]["state"], "stale");
    assert_eq!(view["trials"][3]["state"], "asked");
    let counts = json!({"budget": 10, "asked": 4, "told": 1, "failed": 0, "pruned": 0, "seeded": 0, "queued": 0, "stale": 2,
                        "running": 1, "pending": 1, "remaining": 6});
    assert_eq!(view["counts"], counts);
    // Expiring again finds nothing.
    assert_eq!(
        when(&after, json!({"type": "expire", "now": 2_000_000})).unwrap(),
        vec![]
    );
}

#[test]
fn without_retries_the_last_expiry_completes_the_study() {
    let study = given(&[
        created(2),
        leased(1..=2, 5_000),
        told(&[("t1", 1.0)], false),
    ]);
    let events = when(&study, json!({"type": "expire", "now": 6_000})).unwrap();
    assert_eq!(events, vec![expired(&["t2"], 6_000, true)]);
    let done = study.evolve(&events[0]);
    assert_eq!(done.status(), Some(StudyStatus::Completed));
    let ask = when(&done, json!({"type": "ask", "now": 7_000})).unwrap();
    assert_eq!(Study::result(&ask)["done"], true);
    assert_eq!(Study::result(&ask)["trials"], json!([]));
    // Its result comes back late: recorded, and it may be the best.
    let late = when(
        &done,
        json!({"type": "tell", "trial_id": "t2", "value": 0.5}),
    )
    .unwrap();
    assert_eq!(late, vec![told(&[("t2", 0.5)], false)]);
    let after = done.evolve(&late[0]);
    assert_eq!(after.trial("t2").unwrap().state(), TrialState::Completed);
    assert_eq!(after.best().unwrap().trial.trial_id, "t2");
    assert_eq!(after.view()["counts"]["stale"], 0);
    assert_eq!(after.view()["counts"]["told"], 2);
}

#[test]
fn a_stale_trial_is_handed_out_again_up_to_max_retries() {
    let study = given(&[
        created_retrying(3, 1),
        leased(1..=2, 5_000),
        expired(&["t1"], 5_000, false),
    ]);
    // The retry comes first, then new trials; it uses no budget.
    let events = when(
        &study,
        json!({"type": "ask", "n": 2, "now": 6_000, "lease_seconds": 5}),
    )
    .unwrap();
    let expected = SolverEvent::TrialsAsked {
        trials: vec![trial(3)],
        study_done: false,
        retried: vec![trial(1)],
        lease_until: Some(11_000),
    };
    assert_eq!(events, vec![expected]);
    let result = Study::result(&events);
    assert_eq!(result["retried"], json!(["t1"]));
    assert_eq!(result["trials"][0]["trial_id"], "t1");
    assert_eq!(result["trials"][0]["params"], json!(trial(1).params));
    assert_eq!(result["trials"][1]["trial_id"], "t3");
    let retried = study.evolve(&events[0]);
    let record = retried.trial("t1").unwrap();
    assert_eq!(
        (record.state(), record.retries, record.lease_until),
        (TrialState::Asked, 1, Some(11_000))
    );
    assert_eq!(retried.view()["trials"][0]["retries"], 1);
    // Its second expiry is final: no retry is left, so it is finished.
    let events = when(&retried, json!({"type": "expire", "now": 11_000})).unwrap();
    assert_eq!(events, vec![expired(&["t1", "t2", "t3"], 11_000, false)]);
    let stale = retried.evolve(&events[0]);
    let next = when(&stale, json!({"type": "ask", "n": 5, "now": 12_000})).unwrap();
    let SolverEvent::TrialsAsked {
        trials, retried, ..
    } = &next[0]
    else {
        panic!("not an ask")
    };
    assert!(trials.is_empty());
    let ids: Vec<&str> = retried.iter().map(|t| t.trial_id.as_str()).collect();
    assert_eq!(ids, ["t2", "t3"]);
    assert_eq!(stale.view()["counts"]["pending"], 2);
}

#[test]
fn a_late_result_or_failure_for_a_stale_trial_is_recorded() {
    let study = given(&[
        created_retrying(2, 1),
        leased(1..=2, 5_000),
        expired(&["t1", "t2"], 5_000, false),
    ]);
    let events = when(
        &study,
        json!({"type": "tell", "trial_id": "t1", "value": 0.25}),
    )
    .unwrap();
    assert_eq!(events, vec![told(&[("t1", 0.25)], false)]);
    let after = study.evolve(&events[0]);
    assert_eq!(after.trial("t1").unwrap().state(), TrialState::Completed);
    // t2 still has a retry: failing it finishes the study.
    let events = when(
        &after,
        json!({"type": "fail", "trial_id": "t2", "reason": "lost"}),
    )
    .unwrap();
    assert_eq!(events, vec![failed(&[("t2", Some("lost"))], true)]);
    let done = after.evolve(&events[0]);
    assert_eq!(done.status(), Some(StudyStatus::Completed));
    assert_eq!(done.view()["counts"]["stale"], 0);
    // A stale trial is not retried once it has a result.
    let ask = when(&done, json!({"type": "ask"})).unwrap();
    assert_eq!(Study::result(&ask), json!({"trials": [], "done": true}));
}

#[test]
fn events_from_before_leases_still_replay() {
    let log: Vec<SolverEvent> = [
        json!({"type": "study_created", "config": {"seed": 42, "budget": 2, "probe_ratio": 0.2,
            "sampler": "random",
            "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"},
                       "momentum": {"min": 0.8, "max": 0.99}}}}),
        json!({"type": "trials_asked", "trials": [trial(1), trial(2)], "study_done": false}),
        json!({"type": "trials_told", "results": [{"trial_id": "t1", "value": 1.0}]}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let study = given(&log);
    assert_eq!(
        study,
        given(&[created(2), asked(1..=2), told(&[("t1", 1.0)], false)])
    );
    assert_eq!(
        when(&study, json!({"type": "expire", "now": u64::MAX})).unwrap(),
        vec![]
    );
}
