//! Given events, when a command, then events.

use super::*;
use flotilla_messages::solver::Params;
use flotilla_messages::Page;
use serde_json::{json, Value};

fn spec(parallel: u32) -> RunSpec {
    serde_json::from_value(json!({"command": ["./eval.sh"], "parallel": parallel})).unwrap()
}

fn given(events: &[RunEvent]) -> StudyRun {
    events
        .iter()
        .fold(StudyRun::default(), |run, e| run.evolve(e))
}

/// Decides `command` and folds what it records.
fn when(run: StudyRun, command: RunCommand) -> (StudyRun, Vec<RunEvent>) {
    let events = run.decide(&command).unwrap();
    let run = events.iter().fold(run, |r, e| r.evolve(e));
    (run, events)
}

fn trial(k: u64) -> RunTrial {
    let params: Params = serde_json::from_value(json!({"x": k as f64})).unwrap();
    RunTrial {
        trial_id: format!("t{k}"),
        params,
    }
}

fn types(events: &[RunEvent]) -> Vec<&'static str> {
    events.iter().map(RunEvent::event_type).collect()
}

fn received(request: u64, ks: std::ops::RangeInclusive<u64>) -> RunCommand {
    RunCommand::TrialsReceived {
        request,
        trials: ks.map(trial).collect(),
        refused: None,
    }
}

/// A run of `parallel` slots whose first request is out.
fn started(parallel: u32) -> StudyRun {
    let run = given(&[RunEvent::RunStarted {
        spec: spec(parallel),
    }]);
    let (run, events) = when(
        run,
        RunCommand::QueueReady {
            budget: 10,
            maximize: false,
            max_ask: 1000,
        },
    );
    assert_eq!(
        events[1],
        RunEvent::TrialsRequested {
            request: 1,
            n: parallel
        }
    );
    run
}

fn ended(job: &str, value: f64) -> RunCommand {
    RunCommand::JobEnded {
        job_id: job.into(),
        end: JobEnd::Succeeded { value },
    }
}

fn recorded(trial: &str) -> RunCommand {
    RunCommand::ResultRecorded {
        trial_id: trial.into(),
        refused: None,
    }
}

#[test]
fn a_start_checks_the_spec_and_a_repeat_records_nothing() {
    let run = StudyRun::default();
    let bad: RunSpec = serde_json::from_value(json!({"parallel": 2})).unwrap();
    let refused = run.decide(&RunCommand::StartRun(bad)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidField);
    let (run, events) = when(run, RunCommand::StartRun(spec(2)));
    assert_eq!(types(&events), ["run_started"]);
    assert!(run
        .decide(&RunCommand::StartRun(spec(2)))
        .unwrap()
        .is_empty());
    let other = run.decide(&RunCommand::StartRun(spec(3))).unwrap_err();
    assert_eq!(other.code, ErrorCode::InvalidState);
}

#[test]
fn received_trials_become_jobs_and_each_end_frees_a_slot() {
    let run = started(2);
    let (run, events) = when(run, received(1, 1..=2));
    assert_eq!(
        types(&events),
        ["trials_received", "job_requested", "job_requested"]
    );
    let RunEvent::JobRequested { job_id, spec, .. } = &events[1] else {
        panic!()
    };
    assert_eq!(job_id, "t1");
    assert_eq!(spec.params["x"], json!(1.0));
    assert_eq!(spec.command, ["./eval.sh"]);
    let (run, _) = when(
        run,
        RunCommand::JobAccepted {
            trial_id: "t1".into(),
            job_id: "t1".into(),
            refused: None,
        },
    );
    // The slot frees as the job ends: the next trial is asked for while
    // the study is told.
    let (run, events) = when(run, ended("t1", 0.5));
    assert_eq!(types(&events), ["job_ended", "trials_requested"]);
    assert_eq!(events[1], RunEvent::TrialsRequested { request: 2, n: 1 });
    // Heard twice (the live event and a reconcile): nothing more.
    assert!(run.decide(&ended("t1", 0.5)).unwrap().is_empty());
    let (run, events) = when(run, recorded("t1"));
    assert_eq!(types(&events), ["result_recorded"]);
    assert_eq!(run.best(), Some(("t1", 0.5)));
}

#[test]
fn the_run_finishes_once_the_budget_is_asked_and_nothing_is_in_flight() {
    let run = started(2);
    let (run, _) = when(run, received(1, 1..=2));
    let (run, _) = when(run, ended("t1", 1.0));
    let (run, _) = when(run, recorded("t1"));
    // The study had only one trial left.
    let none = RunCommand::TrialsReceived {
        request: 2,
        trials: vec![],
        refused: None,
    };
    let (run, events) = when(run, none);
    assert_eq!(types(&events), ["trials_received"]);
    let (run, _) = when(run, ended("t2", 2.0));
    let (run, events) = when(run, recorded("t2"));
    assert_eq!(types(&events), ["result_recorded", "run_finished"]);
    assert_eq!(run.status(), Some(RunStatus::Finished));
    assert_eq!(run.counts()["completed"], 2);
}

#[test]
fn a_paused_run_asks_for_nothing_until_resumed() {
    let run = started(1);
    let (run, _) = when(run, received(1, 1..=1));
    let why = Some("maintenance".to_string());
    let (run, events) = when(
        run,
        RunCommand::PauseRun {
            reason: why.clone(),
        },
    );
    assert_eq!(
        events,
        [RunEvent::RunPaused {
            reason: why.clone()
        }]
    );
    let (run, again) = when(run, RunCommand::PauseRun { reason: why });
    assert!(again.is_empty(), "a repeated pause records nothing");
    let (run, _) = when(run, ended("t1", 1.0));
    let (run, events) = when(run, recorded("t1"));
    assert_eq!(types(&events), ["result_recorded"]);
    let (_, events) = when(run, RunCommand::ResumeRun { reason: None });
    assert_eq!(types(&events), ["run_resumed", "trials_requested"]);
}

#[test]
fn a_stop_cancels_every_job_in_flight_and_a_restart_runs_what_waited() {
    let run = started(2);
    let (run, _) = when(run, received(1, 1..=2));
    let (run, events) = when(
        run,
        RunCommand::StopRun {
            reason: Some("enough".into()),
        },
    );
    assert_eq!(
        types(&events),
        [
            "run_stopped",
            "job_cancel_requested",
            "job_cancel_requested"
        ]
    );
    let again = run.decide(&RunCommand::StopRun { reason: None });
    assert_eq!(again.unwrap_err().code, ErrorCode::InvalidState);
    let cancelled = RunCommand::JobEnded {
        job_id: "t1".into(),
        end: JobEnd::Cancelled { reason: None },
    };
    let (run, _) = when(run, cancelled);
    let (run, events) = when(run, recorded("t1"));
    assert_eq!(types(&events), ["result_recorded"]);
    assert_eq!(run.counts()["failed"], 1);
    // Started again: the run asks for new trials (the cancelled ones were
    // failed at the study, and count toward its budget).
    let (run, _) = when(run, RunCommand::StartRun(spec(2)));
    let (_, events) = when(
        run,
        RunCommand::QueueReady {
            budget: 10,
            maximize: false,
            max_ask: 1000,
        },
    );
    assert_eq!(types(&events), ["queue_configured", "trials_requested"]);
}

#[test]
fn a_pruned_trial_has_its_job_cancelled_once() {
    let run = started(1);
    let (run, _) = when(run, received(1, 1..=1));
    let prune = RunCommand::TrialPruned {
        trial_id: "t1".into(),
    };
    let (run, events) = when(run, prune.clone());
    assert_eq!(
        events,
        [RunEvent::TrialPruned {
            trial_id: "t1".into(),
            job_id: "t1".into()
        }]
    );
    assert!(run.decide(&prune).unwrap().is_empty());
    let cancelled = RunCommand::JobEnded {
        job_id: "t1".into(),
        end: JobEnd::Cancelled {
            reason: Some("pruned".into()),
        },
    };
    let (run, _) = when(run, cancelled);
    let (run, _) = when(run, recorded("t1"));
    assert_eq!(run.counts()["pruned"], 1);
}

#[test]
fn job_starts_record_the_node_and_ignore_older_attempts() {
    let run = started(1);
    let (run, _) = when(run, received(1, 1..=1));
    let start = |attempt, node: &str| RunCommand::JobStarted {
        job_id: "t1".into(),
        attempt,
        node: Some(node.into()),
    };
    let (run, events) = when(run, start(2, "gpu-2"));
    assert_eq!(types(&events), ["job_started"]);
    assert!(run.decide(&start(1, "gpu-1")).unwrap().is_empty());
    assert!(run.decide(&start(2, "gpu-2")).unwrap().is_empty());
    assert_eq!(run.trials().next().unwrap().node.as_deref(), Some("gpu-2"));
    let unknown = RunCommand::JobStarted {
        job_id: "other".into(),
        attempt: 1,
        node: None,
    };
    assert!(run.decide(&unknown).unwrap().is_empty());
}

#[test]
fn leases_are_renewed_for_jobs_in_the_queue_once_per_clock() {
    let run = started(2);
    let (run, _) = when(run, received(1, 1..=2));
    let (run, events) = when(run, RunCommand::RenewLeases { now: 1000 });
    assert_eq!(
        events,
        [RunEvent::LeasesDue {
            trial_ids: vec!["t1".into(), "t2".into()],
            now: 1000
        }]
    );
    assert!(run
        .decide(&RunCommand::RenewLeases { now: 1000 })
        .unwrap()
        .is_empty());
}

#[test]
fn a_refused_job_fails_its_trial_and_a_refused_value_too() {
    let run = started(2);
    let (run, _) = when(run, received(1, 1..=2));
    let (run, events) = when(
        run,
        RunCommand::JobAccepted {
            trial_id: "t1".into(),
            job_id: "t1".into(),
            refused: Some("COMMAND_NOT_ALLOWED: sh".into()),
        },
    );
    assert_eq!(types(&events), ["job_ended", "run_failed"]);
    assert_eq!(run.status(), Some(RunStatus::Failed));
    let (run, events) = when(run, recorded("t1"));
    assert_eq!(types(&events), ["result_recorded"]);
    let (run, _) = when(run, ended("t2", 1.0));
    let (run, _) = when(
        run,
        RunCommand::ResultRecorded {
            trial_id: "t2".into(),
            refused: Some("INVALID_FIELD".into()),
        },
    );
    assert_eq!(run.counts()["failed"], 2);
    assert_eq!(run.best(), None);
}

#[test]
fn the_view_has_counts_running_jobs_and_best() {
    let run = started(2);
    let (run, _) = when(run, received(1, 1..=2));
    let (run, _) = when(
        run,
        RunCommand::JobStarted {
            job_id: "t2".into(),
            attempt: 1,
            node: Some("gpu-1".into()),
        },
    );
    let view = run.view();
    assert_eq!(view["status"], "running");
    assert_eq!(view["counts"]["pending"], 1);
    assert_eq!(view["counts"]["running"], 1);
    assert_eq!(view["running"][1]["node"], "gpu-1");
}

#[test]
fn a_refused_ask_fails_the_run_instead_of_finishing_it() {
    let run = started(2);
    let refused = RunCommand::TrialsReceived {
        request: 1,
        trials: vec![],
        refused: Some("INVALID_STATE: ask: the study is stopped".into()),
    };
    let (run, events) = when(run, refused);
    assert_eq!(types(&events), ["trials_received", "run_failed"]);
    assert_eq!(run.status(), Some(RunStatus::Failed));
    // A failed run may be started again.
    assert!(run.decide(&RunCommand::StartRun(spec(2))).is_ok());
}

#[test]
fn asks_come_in_chunks_the_study_can_answer() {
    let run = given(&[RunEvent::RunStarted { spec: spec(200) }]);
    let ready = RunCommand::QueueReady {
        budget: 1000,
        maximize: true,
        max_ask: 40,
    };
    let (_, events) = when(run, ready);
    assert_eq!(events[1], RunEvent::TrialsRequested { request: 1, n: 40 });
}

#[test]
fn a_run_paused_while_starting_still_records_its_queue() {
    let run = given(&[RunEvent::RunStarted { spec: spec(2) }]);
    let (run, _) = when(run, RunCommand::PauseRun { reason: None });
    let ready = RunCommand::QueueReady {
        budget: 10,
        maximize: true,
        max_ask: 1000,
    };
    let (run, events) = when(run, ready);
    assert_eq!(types(&events), ["queue_configured"]);
    let (_, events) = when(run, RunCommand::ResumeRun { reason: None });
    assert_eq!(types(&events), ["run_resumed", "trials_requested"]);
}

#[test]
fn a_cancel_that_raced_its_submit_is_asked_again_and_old_jobs_are_ignored() {
    let run = started(1);
    let (run, _) = when(run, received(1, 1..=1));
    let (run, events) = when(run, RunCommand::StopRun { reason: None });
    assert_eq!(types(&events), ["run_stopped", "job_cancel_requested"]);
    // The queue took the job after the cancel found nothing: cancel again.
    let accepted = RunCommand::JobAccepted {
        trial_id: "t1".into(),
        job_id: "t1".into(),
        refused: None,
    };
    let (run, events) = when(run, accepted);
    assert_eq!(types(&events), ["job_accepted", "job_cancel_requested"]);
    // An end heard for a job the trial no longer has changes nothing.
    let old = RunCommand::JobEnded {
        job_id: "t0".into(),
        end: JobEnd::Succeeded { value: 1.0 },
    };
    assert!(run.decide(&old).unwrap().is_empty());
}

#[test]
fn trials_are_paged_and_the_rest_is_whole() {
    let run = started(3);
    let (run, _) = when(run, received(1, 1..=3));
    let page = Page {
        after: None,
        limit: Some(2),
    };
    let view = run.view_page(&page);
    assert_eq!(view["trials"].as_array().unwrap().len(), 2);
    assert_eq!(view["next"], "t2");
    assert_eq!(view["running"].as_array().unwrap().len(), 3);
    let rest = run.view_page(&Page {
        after: Some("t2".into()),
        limit: Some(2),
    });
    assert_eq!(rest["trials"][0]["trial_id"], "t3");
    assert_eq!(rest["next"], Value::Null);
}
