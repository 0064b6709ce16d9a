//! What a run hears from its peers: the scheduler's events on the study's
//! queue and the solver's on the study, turned into the run's commands.
//!
//! Pure functions of one event (or one job of a queue's view), so that the
//! live reaction to an event and the periodic reconciliation against the
//! queue's state say the same thing. The run records nothing for a command
//! that repeats what it knows, so hearing an end twice is harmless.

use flotilla_messages::study_run::{JobEnd, RunCommand, RunSpec};
use serde_json::Value;

/// The run command a scheduler event of queue `<study>` means, if any.
pub fn from_scheduler_event(event: &Value) -> Option<RunCommand> {
    let job_id = event["job_id"].as_str()?.to_string();
    let attempt = || {
        event["attempt"]
            .as_u64()
            .and_then(|a| u32::try_from(a).ok())
    };
    match event["type"].as_str()? {
        "job_started" => Some(RunCommand::JobStarted {
            job_id,
            attempt: attempt()?,
            node: event["node"].as_str().map(str::to_string),
        }),
        "job_succeeded" => Some(RunCommand::JobEnded {
            job_id,
            end: succeeded(event["value"].as_f64()),
        }),
        "job_failed" if event["will_retry"] != true => Some(RunCommand::JobEnded {
            job_id,
            end: JobEnd::Failed {
                reason: event["reason"]
                    .as_str()
                    .unwrap_or("the job failed")
                    .to_string(),
            },
        }),
        "job_timed_out" if event["will_retry"] != true => Some(RunCommand::JobEnded {
            job_id,
            end: JobEnd::Failed {
                reason: format!(
                    "timed out after {}s",
                    event["after_seconds"].as_f64().unwrap_or_default()
                ),
            },
        }),
        "job_cancelled" => Some(RunCommand::JobEnded {
            job_id,
            end: JobEnd::Cancelled {
                reason: event["reason"].as_str().map(str::to_string),
            },
        }),
        _ => None,
    }
}

fn succeeded(value: Option<f64>) -> JobEnd {
    match value {
        Some(value) => JobEnd::Succeeded { value },
        // The queue records a success without a value as a failure; this
        // is for a queue that was told not to expect one.
        None => JobEnd::Failed {
            reason: "the job succeeded without printing a value".into(),
        },
    }
}

/// The run command one job of a queue's view means (what the live events
/// would have said), if any: its end, or its running attempt.
pub fn from_job_view(job: &Value) -> Option<RunCommand> {
    let job_id = job["job_id"].as_str()?.to_string();
    let reason = || job["reason"].as_str().map(str::to_string);
    match job["status"].as_str()? {
        "succeeded" => Some(RunCommand::JobEnded {
            job_id,
            end: succeeded(job["value"].as_f64()),
        }),
        "failed" | "timed_out" => Some(RunCommand::JobEnded {
            job_id,
            end: JobEnd::Failed {
                reason: reason().unwrap_or_else(|| "the job failed".into()),
            },
        }),
        "cancelled" => Some(RunCommand::JobEnded {
            job_id,
            end: JobEnd::Cancelled { reason: reason() },
        }),
        "running" => Some(RunCommand::JobStarted {
            job_id,
            attempt: u32::try_from(job["attempt"].as_u64()?).ok()?,
            node: job["node"].as_str().map(str::to_string),
        }),
        _ => None,
    }
}

/// The `start_run` a new study's `runner` section asks for, and the
/// command id that makes it once per study (from the event's id), if the
/// event is a `study_created` with one.
pub fn runner_of_new_study(event: &Value, event_id: &str) -> Option<(RunCommand, String)> {
    if event["type"] != "study_created" || event_id.is_empty() {
        return None;
    }
    let spec: RunSpec = serde_json::from_value(event["config"]["runner"].clone()).ok()?;
    let id = flotilla_host::derived_command_id("runner", event_id);
    Some((RunCommand::StartRun(spec), id))
}

/// The run command a solver event of study `<study>` means, if any: a
/// trial the pruner stopped.
pub fn from_solver_event(event: &Value) -> Option<RunCommand> {
    match (event["type"].as_str()?, event["action"].as_str()) {
        ("trial_reported", Some("prune")) => Some(RunCommand::TrialPruned {
            trial_id: event["trial_id"].as_str()?.to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ends_are_heard_once_the_queue_gives_up_on_the_job() {
        let failed = |retry: bool| {
            from_scheduler_event(&json!({"type": "job_failed", "job_id": "t1", "attempt": 1,
                "reason": "exit 3", "will_retry": retry, "outputs": {}}))
        };
        assert_eq!(failed(true), None);
        assert_eq!(
            failed(false),
            Some(RunCommand::JobEnded {
                job_id: "t1".into(),
                end: JobEnd::Failed {
                    reason: "exit 3".into()
                }
            })
        );
        let ok = from_scheduler_event(
            &json!({"type": "job_succeeded", "job_id": "t2", "attempt": 2, "value": 0.5}),
        );
        assert_eq!(
            ok,
            Some(RunCommand::JobEnded {
                job_id: "t2".into(),
                end: JobEnd::Succeeded { value: 0.5 }
            })
        );
        assert_eq!(
            from_scheduler_event(&json!({"type": "job_lost", "job_id": "t2", "attempt": 1})),
            None
        );
    }

    #[test]
    fn a_view_says_what_the_events_said() {
        let event = json!({"type": "job_succeeded", "job_id": "t3", "attempt": 1, "value": 2.0});
        let view = json!({"job_id": "t3", "status": "succeeded", "attempt": 1, "value": 2.0});
        assert_eq!(from_scheduler_event(&event), from_job_view(&view));
        let started = json!({"type": "job_started", "job_id": "t4", "attempt": 2, "node": "n1"});
        let running = json!({"job_id": "t4", "status": "running", "attempt": 2, "node": "n1"});
        assert_eq!(from_scheduler_event(&started), from_job_view(&running));
        assert_eq!(
            from_job_view(&json!({"job_id": "t5", "status": "pending"})),
            None
        );
    }

    #[test]
    fn only_prune_answers_reach_the_run() {
        let report = |action: &str| {
            from_solver_event(&json!({"type": "trial_reported", "trial_id": "t1",
                "step": 1, "value": 1.0, "action": action}))
        };
        assert_eq!(report("continue"), None);
        assert_eq!(
            report("prune"),
            Some(RunCommand::TrialPruned {
                trial_id: "t1".into()
            })
        );
    }

    #[test]
    fn a_new_study_with_a_runner_starts_its_run_once() {
        let created = json!({"type": "study_created", "config": {"seed": 1, "budget": 3,
            "bounds": {}, "runner": {"command": ["./eval.sh"], "parallel": 2}}});
        let (command, id) = runner_of_new_study(&created, "01a2-42").unwrap();
        assert_eq!(id, "runner-01a242");
        let RunCommand::StartRun(spec) = command else {
            panic!("not start_run")
        };
        assert_eq!(spec.parallel, 2);
        let plain =
            json!({"type": "study_created", "config": {"seed": 1, "budget": 3, "bounds": {}}});
        assert_eq!(runner_of_new_study(&plain, "01a2"), None);
    }
}
