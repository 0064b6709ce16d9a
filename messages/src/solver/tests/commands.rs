//! The commands: unknown fields, `ask` and its lease, both forms of `tell`
//! and `fail`, `heartbeat`, `expire`, `stop`, and the `type` tags.

use super::*;
use crate::codec::Encoding;
use serde_json::json;

#[test]
fn every_command_refuses_unknown_fields() {
    let bad = [
        json!({"type": "create_study", "seed": 1, "budget": 1,
               "bounds": {"x": {"min": 0, "max": 1}}, "batch_size": 4}),
        json!({"type": "create_study", "seed": 1, "budget": 1,
               "bounds": {"x": {"min": 0, "max": 1, "width": 0.1}}}),
        json!({"type": "ask", "n": 1, "extra": true}),
        json!({"type": "tell", "results": [], "extra": 1}),
        json!({"type": "tell", "trial_id": "t1", "value": 1.0, "extra": 1}),
        json!({"type": "tell", "results": [{"trial_id": "t1", "value": 1.0, "x": 1}]}),
        json!({"type": "stop", "why": "x"}),
        json!({"type": "fail", "trial_id": "t1", "value": 1.0}),
        json!({"type": "fail", "failures": [{"trial_id": "t1", "why": "x"}]}),
    ];
    for body in bad {
        let e = parse(body.clone()).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownField, "{body}: {e}");
    }
}

#[test]
fn ask_defaults_to_one() {
    assert_eq!(
        parse(json!({"type": "ask"})).unwrap(),
        SolverCommand::Ask { n: 1, lease: None }
    );
    assert_eq!(
        parse(json!({"type": "ask", "n": 5})).unwrap(),
        SolverCommand::Ask { n: 5, lease: None }
    );
    assert_eq!(
        code(json!({"type": "ask", "n": -1})),
        ErrorCode::InvalidField
    );
}

#[test]
fn tell_accepts_a_list_or_a_single_result() {
    let list = parse(json!({"type": "tell", "results": [
        {"trial_id": "t1", "value": 0.5, "cost": 2.0}, {"trial_id": "t2", "value": 1}
    ]}))
    .unwrap();
    let SolverCommand::Tell(tell) = list else {
        panic!("not a tell")
    };
    assert_eq!(tell.results.len(), 2);
    assert_eq!(tell.results[0].cost, Some(2.0));
    let single =
        parse(json!({"type": "tell", "trial_id": "t1", "value": 0.5, "cost": 2.0})).unwrap();
    let expected = Tell {
        results: vec![tell.results[0].clone()],
    };
    assert_eq!(single, SolverCommand::Tell(expected));
}

#[test]
fn tell_refuses_mixed_missing_or_empty_forms() {
    for body in [
        json!({"type": "tell"}),
        json!({"type": "tell", "results": []}),
        json!({"type": "tell", "trial_id": "t1"}),
        json!({"type": "tell", "value": 1.0}),
        json!({"type": "tell", "results": [], "trial_id": "t1", "value": 1.0}),
    ] {
        assert_eq!(code(body.clone()), ErrorCode::InvalidField, "{body}");
    }
}

#[test]
fn fail_accepts_a_list_or_a_single_failure_with_an_optional_reason() {
    let single = parse(json!({"type": "fail", "trial_id": "t3", "reason": "exit 3"})).unwrap();
    let failure = |id: &str, reason: Option<&str>| TrialFailure {
        trial_id: id.into(),
        reason: reason.map(Into::into),
    };
    assert_eq!(
        single,
        SolverCommand::Fail(Fail {
            failures: vec![failure("t3", Some("exit 3"))]
        })
    );
    let bare = parse(json!({"type": "fail", "trial_id": "t3"})).unwrap();
    assert_eq!(
        bare,
        SolverCommand::Fail(Fail {
            failures: vec![failure("t3", None)]
        })
    );
    let list = parse(json!({"type": "fail", "failures": [
        {"trial_id": "t4", "reason": "timed out"}, {"trial_id": "t5"}]}))
    .unwrap();
    let expected = Fail {
        failures: vec![failure("t4", Some("timed out")), failure("t5", None)],
    };
    assert_eq!(list, SolverCommand::Fail(expected.clone()));
    // Written in the list form, in both encodings.
    let value = serde_json::to_value(SolverCommand::Fail(expected.clone())).unwrap();
    assert_eq!(
        value,
        json!({"type": "fail", "failures": [
            {"trial_id": "t4", "reason": "timed out"}, {"trial_id": "t5"}]})
    );
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let bytes = encoding
            .encode(&SolverCommand::Fail(expected.clone()))
            .unwrap();
        let back: SolverCommand = encoding.decode(&bytes).unwrap();
        assert_eq!(back, SolverCommand::Fail(expected.clone()));
    }
}

#[test]
fn fail_refuses_mixed_missing_or_empty_forms() {
    for body in [
        json!({"type": "fail"}),
        json!({"type": "fail", "failures": []}),
        json!({"type": "fail", "reason": "x"}),
        json!({"type": "fail", "failures": [{"trial_id": "t1"}], "trial_id": "t1"}),
        json!({"type": "fail", "failures": [{"reason": "x"}]}),
    ] {
        assert_eq!(code(body.clone()), ErrorCode::InvalidField, "{body}");
    }
}

#[test]
fn ask_with_now_is_leased_and_without_it_is_not() {
    assert_eq!(
        parse(json!({"type": "ask", "n": 2, "now": 1000})).unwrap(),
        SolverCommand::Ask {
            n: 2,
            lease: Some(Lease {
                now: 1000,
                seconds: None
            })
        }
    );
    let leased = parse(json!({"type": "ask", "now": 1000, "lease_seconds": 60})).unwrap();
    let expected = SolverCommand::Ask {
        n: 1,
        lease: Some(Lease {
            now: 1000,
            seconds: Some(60),
        }),
    };
    assert_eq!(leased, expected);
    assert_eq!(
        serde_json::to_value(&expected).unwrap(),
        json!({"type": "ask", "n": 1, "now": 1000, "lease_seconds": 60})
    );
    assert_eq!(
        serde_json::to_value(SolverCommand::Ask { n: 3, lease: None }).unwrap(),
        json!({"type": "ask", "n": 3})
    );
    let e = parse(json!({"type": "ask", "lease_seconds": 60})).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert!(e.message.contains("lease_seconds: needs `now`"), "{e}");
    assert_eq!(
        code(json!({"type": "ask", "now": "2026-01-01T00:00:00Z"})),
        ErrorCode::InvalidField
    );
    for command in [expected, SolverCommand::Ask { n: 3, lease: None }] {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding.encode(&command).unwrap();
            assert_eq!(encoding.decode::<SolverCommand>(&bytes).unwrap(), command);
        }
    }
}

#[test]
fn heartbeat_and_expire_read_and_round_trip() {
    let heartbeat =
        parse(json!({"type": "heartbeat", "trial_ids": ["t1", "t2"], "now": 5})).unwrap();
    let expected = SolverCommand::Heartbeat(Heartbeat {
        trial_ids: vec!["t1".into(), "t2".into()],
        now: 5,
        lease_seconds: None,
    });
    assert_eq!(heartbeat, expected);
    let expire = parse(json!({"type": "expire", "now": 7})).unwrap();
    assert_eq!(expire, SolverCommand::Expire { now: 7 });
    for command in [expected, expire] {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding.encode(&command).unwrap();
            assert_eq!(encoding.decode::<SolverCommand>(&bytes).unwrap(), command);
        }
    }
    assert_eq!(code(json!({"type": "expire"})), ErrorCode::InvalidField);
    assert_eq!(
        code(json!({"type": "heartbeat", "now": 1})),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(json!({"type": "heartbeat", "trial_ids": [], "now": 1, "x": 1})),
        ErrorCode::UnknownField
    );
    assert_eq!(
        code(json!({"type": "expire", "now": 1, "x": 1})),
        ErrorCode::UnknownField
    );
}

#[test]
fn stop_reason_is_optional() {
    assert_eq!(
        parse(json!({"type": "stop"})).unwrap(),
        SolverCommand::Stop { reason: None }
    );
}

#[test]
fn command_type_matches_the_serialized_tag() {
    let commands = [
        SolverCommand::CreateStudy(lr_config()),
        SolverCommand::Ask { n: 1, lease: None },
        SolverCommand::Tell(Tell {
            results: vec![TrialResult::single("t1", 1.0)],
        }),
        SolverCommand::Fail(Fail {
            failures: vec![TrialFailure {
                trial_id: "t1".into(),
                reason: None,
            }],
        }),
        SolverCommand::Heartbeat(Heartbeat {
            trial_ids: vec!["t1".into()],
            now: 1,
            lease_seconds: None,
        }),
        SolverCommand::Expire { now: 1 },
        SolverCommand::Stop { reason: None },
    ];
    let leased = SolverCommand::Ask {
        n: 1,
        lease: Some(Lease {
            now: 1,
            seconds: None,
        }),
    };
    assert_eq!(leased.command_type(), "ask");
    assert_eq!(serde_json::to_value(&leased).unwrap()["type"], json!("ask"));
    for (command, tag) in commands.iter().zip(COMMAND_TYPES) {
        assert_eq!(command.command_type(), *tag);
        assert_eq!(serde_json::to_value(command).unwrap()["type"], json!(tag));
    }
}
