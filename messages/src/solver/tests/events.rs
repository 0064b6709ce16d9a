//! The events: logs from before a field existed still read, trial ids are
//! canonical, and the `type` tags.

use super::*;
use serde_json::json;

#[test]
fn trials_failed_reads_without_completes_study() {
    let event: SolverEvent = serde_json::from_value(json!({"type": "trials_failed",
        "failures": [{"trial_id": "t2", "reason": "boom"}]}))
    .unwrap();
    assert_eq!(
        event,
        SolverEvent::TrialsFailed {
            failures: vec![TrialFailure {
                trial_id: "t2".into(),
                reason: Some("boom".into())
            }],
            completes_study: false
        }
    );
}

#[test]
fn trials_asked_from_before_leases_still_reads() {
    let event: SolverEvent = serde_json::from_value(json!({"type": "trials_asked",
        "trials": [], "study_done": false}))
    .unwrap();
    assert_eq!(
        event,
        SolverEvent::TrialsAsked {
            trials: vec![],
            study_done: false,
            retried: vec![],
            lease_until: None
        }
    );
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"type": "trials_asked", "trials": [], "study_done": false})
    );
}

#[test]
fn trial_ids_are_canonical() {
    assert_eq!(trial_id(12), "t12");
    assert_eq!(trial_number("t12"), Some(12));
    for bad in ["t0", "t07", "12", "x1", "t", "t-1", "t1a", "t+1", "T1"] {
        assert_eq!(trial_number(bad), None, "{bad}");
    }
    assert_eq!(trial_number(&trial_id(u64::MAX)), Some(u64::MAX));
}

#[test]
fn event_type_matches_the_serialized_tag() {
    let events = [
        SolverEvent::StudyCreated {
            config: lr_config(),
        },
        SolverEvent::TrialsAsked {
            trials: vec![],
            study_done: true,
            retried: vec![],
            lease_until: Some(1),
        },
        SolverEvent::LeasesRenewed {
            trial_ids: vec![],
            lease_until: 1,
        },
        SolverEvent::TrialsExpired {
            trial_ids: vec![],
            now: 1,
            completes_study: false,
        },
        SolverEvent::TrialsTold {
            results: vec![],
            completes_study: false,
        },
        SolverEvent::TrialsFailed {
            failures: vec![],
            completes_study: true,
        },
        SolverEvent::StudyStopped { reason: None },
    ];
    for event in events {
        let tag = serde_json::to_value(&event).unwrap()["type"].clone();
        assert_eq!(tag, json!(event.event_type()));
    }
}
