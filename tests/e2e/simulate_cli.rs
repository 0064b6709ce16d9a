//! `flotilla simulate` as a CI step would run it: the same scenario and
//! seed print the same event-log hash (another seed another), a failed
//! check exits 1 saying what was expected and what was seen, and a bad
//! scenario exits 2 naming the field, writing nothing.

use crate::support::flotilla;
use std::process::Output;

const STRESS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/simulations/scenarios/navarch-stress-1000.yaml"
);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hash_of(out: &Output) -> String {
    let text = stdout(out);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("log hash: "))
        .unwrap_or_else(|| panic!("no hash in {text}"));
    assert_eq!(line.len(), 64, "a SHA-256 in hex: {line}");
    line.to_string()
}

#[test]
fn the_same_seed_gives_the_same_log_hash_and_another_seed_another() {
    let run = |seed: &str| {
        let out = flotilla(&["simulate", STRESS, "--seed", seed]);
        assert!(
            out.status.success(),
            "{}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        hash_of(&out)
    };
    let first = run("3");
    assert_eq!(run("3"), first, "same scenario, same seed");
    assert_ne!(run("4"), first, "another seed");
}

#[test]
fn a_failed_check_exits_1_with_what_was_expected_and_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("too-many.yaml");
    std::fs::write(
        &path,
        "name: too-many\nfleet:\n  - {id: a, gpu_count: 8}\n  - {id: b, gpu_count: 8}\n\
         events:\n  - {at: 0s, action: start_fleet}\n  - {at: 3m, action: log, params: {log_message: up}}\n\
         assertions:\n  - {type: node_count, target: all, expected: \"99\"}\n  - {type: node_status, target: a, expected: active}\n",
    )
    .unwrap();
    let out = flotilla(&["simulate", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("expected = 99 serving, saw 2 serving"),
        "{text}"
    );
    assert!(
        text.contains("ok   [3:00] node_status a (fleet-1): expected active"),
        "{text}"
    );
    assert!(text.contains("1 of 2 checks failed"), "{text}");
}

#[test]
fn a_bad_scenario_is_refused_naming_the_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    let text = std::fs::read_to_string(STRESS)
        .unwrap()
        .replace("scope: rack", "scop: rack");
    std::fs::write(&path, text).unwrap();
    let report = dir.path().join("r.html");
    let out = flotilla(&[
        "simulate",
        path.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("stress.chaos.cascading.scop"), "{err}");
    assert!(!report.exists(), "nothing written");
    let missing = flotilla(&["simulate", dir.path().join("nope.yaml").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.yaml"));
}
