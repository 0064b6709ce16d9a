//! `flotilla bench solver` end to end: the real binary prints the quality
//! table, the comparison with Optuna's cells when asked, the leaders table
//! the `auto` rule is read from, and the overhead table; bad flags are
//! errors that name the flag or value.

use crate::support::flotilla;

fn stdout(args: &[&str]) -> String {
    let out = flotilla(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bench_solver_prints_quality_leaders_and_overhead_tables() {
    let text = stdout(&[
        "bench",
        "solver",
        "--seeds",
        "2",
        "--budgets",
        "12,20",
        "--functions",
        "branin,levy3-off",
        "--samplers",
        "tpe,cmaes,auto,tpe:gamma=0.2",
        "--overhead-trials",
        "50",
        "--overhead-params",
        "2",
        "--window",
        "5",
    ]);
    // Rows as words: the first words of every line.
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let has = |start: &[&str]| rows.iter().any(|r| r.starts_with(start));
    assert!(text.contains("median [q1 - q3] over 2 seeds"), "{text}");
    // Quality: a row per function and budget, a cell per sampler.
    for start in [
        &["branin", "12"],
        &["branin", "20"],
        &["levy3-off", "12"],
        &["levy3-off", "20"],
    ] {
        assert!(has(start), "{start:?}: {text}");
    }
    assert!(has(&[
        "function",
        "budget",
        "tpe",
        "cmaes",
        "auto",
        "tpe:gamma=0.2"
    ]));
    // Leaders: one function per (dims, domain) group here.
    assert!(has(&["dims", "domain", "budget", "functions"]), "{text}");
    assert!(
        has(&["2", "std", "12", "1"]) && has(&["3", "off", "20", "1"]),
        "{text}"
    );
    // Overhead: a row per sampler at 50 trials of 2 parameters.
    for sampler in ["tpe", "cmaes", "auto"] {
        assert!(has(&[sampler, "50", "2"]), "{sampler}: {text}");
    }
}

#[test]
fn bench_solver_names_what_it_does_not_know() {
    for (args, expected) in [
        (vec!["--samplers", "bayes"], "unknown sampler \"bayes\""),
        (
            vec!["--functions", "sphere3"],
            "unknown function \"sphere3\"",
        ),
        (
            vec!["--suite", "huge"],
            "--suite \"huge\": expected goal or auto",
        ),
        (
            vec!["--budgets", "0"],
            "--budgets needs budgets of at least 1",
        ),
    ] {
        let mut all = vec!["bench", "solver", "--seeds", "1", "--no-overhead"];
        all.extend(args);
        let out = flotilla(&all);
        assert!(!out.status.success(), "{all:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{all:?}: {err}");
    }
}
