//! `flotilla bench solver` end to end: the real binary prints the quality
//! table, the comparison with Optuna's cells when asked, the leaders table
//! the `auto` rule is read from, and the overhead table; bad flags are
//! errors that name the flag or value. `flotilla bench run`, tiny: a row
//! per mode (the CLI and the control plane, real subprocesses) and their
//! ratio, as a table and as JSON.

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
fn bench_solver_compares_with_optuna_cells_kept_from_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let cells = dir.path().join("optuna.jsonl");
    // Optuna's TPE far behind, its GP far ahead: every Flotilla sampler is
    // <= the first and not within 2x of the second.
    let lines = [
        r#"{"sampler": "optuna-tpe", "function": "branin", "budget": 12, "regrets": [50.0, 60.0]}"#,
        r#"{"sampler": "optuna-gp", "function": "branin", "budget": 12, "regrets": [0.0, 0.0]}"#,
    ];
    std::fs::write(&cells, lines.join("\n")).unwrap();
    let cells = cells.display().to_string();
    let text = stdout(&[
        "bench",
        "solver",
        "--seeds",
        "2",
        "--budgets",
        "12",
        "--functions",
        "branin",
        "--samplers",
        "gp,auto",
        "--no-overhead",
        "--compare",
        "--optuna-json",
        &cells,
    ]);
    assert!(
        text.lines().any(|l| l.split_whitespace().eq([
            "function",
            "budget",
            "gp",
            "auto",
            "optuna-tpe",
            "optuna-gp"
        ])),
        "{text}"
    );
    for sampler in ["gp", "auto"] {
        assert!(
            text.contains(&format!(
                "{sampler}: median regret <= optuna-tpe's on 1/1 at 12"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{sampler}: median regret within 2x of optuna-gp's on 0/1 at 12"
            )),
            "{text}"
        );
    }
    // A cell for a function not benchmarked, or no such file: errors.
    std::fs::write(
        dir.path().join("other.jsonl"),
        r#"{"sampler": "optuna-tpe", "function": "levy10", "budget": 12, "regrets": [1.0]}"#,
    )
    .unwrap();
    for (file, expected) in [
        (
            "other.jsonl",
            "optuna_compare.py reported function \"levy10\"",
        ),
        ("missing.jsonl", "--optuna-json"),
    ] {
        let path = dir.path().join(file).display().to_string();
        let out = flotilla(&[
            "bench",
            "solver",
            "--seeds",
            "1",
            "--budgets",
            "12",
            "--functions",
            "branin",
            "--samplers",
            "gp",
            "--no-overhead",
            "--compare",
            "--optuna-json",
            &path,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected),
            "{file}: {err}"
        );
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
            "--suite \"huge\": expected goal, shifted, auto or mo",
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

#[test]
fn bench_run_prints_a_row_per_mode_and_their_ratio() {
    let args = ["bench", "run", "--trials", "20", "--parallel", "4"];
    let text = stdout(&args);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        [
            "mode",
            "what",
            "wall s",
            "trials/s",
            "CPU ms/trial (self)",
            "CPU ms/trial (children)"
        ],
        "{text}"
    );
    let modes: Vec<&str> = rows[2..].iter().map(|r| r[0]).collect();
    assert_eq!(modes, ["cli", "control-plane"], "{text}");
    for row in &rows[2..] {
        assert_eq!(row.len(), 6, "{text}");
        for cell in &row[2..] {
            let n: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell:?}: {text}"));
            assert!(n.is_finite() && n >= 0.0, "{cell}: {text}");
        }
    }
    assert!(text.contains("study runs: 20 trials, parallel 4"), "{text}");
    assert!(text.contains("control plane / cli wall time: "), "{text}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let report: serde_json::Value = serde_json::from_str(&stdout(&json_args)).unwrap();
    assert_eq!(
        (&report["trials"], &report["parallel"]),
        (&20.into(), &4.into())
    );
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2, "{report}");
    for (mode, name) in modes.iter().zip(["cli", "control-plane"]) {
        assert_eq!(mode["mode"], name, "{report}");
        assert!(mode["wall_seconds"].as_f64().unwrap() > 0.0, "{report}");
        for part in ["self", "children"] {
            assert!(mode["cpu_ms_per_trial"][part].is_number(), "{report}");
        }
    }
    assert!(report["ratio"].as_f64().unwrap() > 0.0, "{report}");
}
