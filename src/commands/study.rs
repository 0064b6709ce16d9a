//! `flotilla ask`, `flotilla tell` and `flotilla study show`: a study's
//! ask/tell loop for scripts, straight on the embedded log (no `flotilla up`
//! needed) or through a running gateway with `--http`. `study watch|stop|
//! pause|resume`, which talk to a study's run in the control plane, are
//! `crate::commands::watch`.
//!
//! Exit status: 0 accepted, 1 refused by the study, 2 could not ask.
//!
//! The embedded helpers here ([`EmbeddedStudy`]) are also what `flotilla run`
//! drives: the host's durable command step ([`AggregateCore`]) without actix.

use crate::backend;
use crate::cli::{AskArgs, ReportArgs, StudyArgs, StudyShowArgs, StudyTarget, StudyWhat, TellArgs};
use crate::commands::block_on;
use crate::config::{BackendChoice, DEFAULT_DATA_DIR};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_bus::EventLog;
use flotilla_host::{AggregateCore, HostConfig, HostDeps, HostMetrics};
use flotilla_messages::{validate_id, Actor, CommandRequest, Reply, StreamName, Subjects};
use flotilla_solver::Study;
use futures::TryStreamExt;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// One study on the embedded log, opened by this process.
pub struct EmbeddedStudy {
    /// The study's state and its durable command step.
    pub core: AggregateCore<Study>,
    log: Arc<dyn EventLog>,
}

impl EmbeddedStudy {
    /// Opens the log in `data_dir` and recovers study `id`. With `create`
    /// false, a data dir without a log is an error instead of a new log.
    pub async fn open(data_dir: &Path, id: &str, create: bool) -> Result<Self> {
        validate_id("study", id).map_err(|e| anyhow!("study: {e}"))?;
        let stream = StreamName::new(Actor::Solver, id).map_err(|e| anyhow!("study: {e}"))?;
        if !create && !data_dir.join("log").exists() {
            bail!(
                "data_dir: no event log in {} (pass the --data-dir the study was run with)",
                data_dir.display()
            );
        }
        let choice = BackendChoice::Embedded(data_dir.to_path_buf());
        let subjects = Subjects::default();
        let opened = backend::open(&choice, &subjects, 1).await?;
        let metrics = HostMetrics::register(&prometheus::Registry::new())?;
        let deps = HostDeps {
            log: opened.log.clone(),
            bus: opened.bus.clone(),
            config: Arc::new(HostConfig {
                subjects,
                ..HostConfig::default()
            }),
            metrics,
        };
        let core = AggregateCore::<Study>::recover(stream, deps)
            .await
            .map_err(|e| anyhow!("cannot recover study {id}: {e}; run `flotilla audit`"))?;
        Ok(EmbeddedStudy {
            core,
            log: opened.log,
        })
    }

    /// Runs one command (a JSON map with `type`) and returns the reply.
    pub async fn command(&mut self, command: Value) -> Result<Reply> {
        let request =
            CommandRequest::from_value(command, None).map_err(|r| anyhow!("{}", r.message))?;
        Ok(self.core.execute(request, None).await.0)
    }

    /// The id of the event that created the study: the run id, stable
    /// across restarts.
    pub async fn created_id(&self) -> Result<Option<String>> {
        let name = self.core.stream().to_string();
        let mut events = self.log.read_stream(&name, 1).await?;
        Ok(events.try_next().await?.map(|e| e.id))
    }
}

/// The data dir flag or the default.
pub fn data_dir_or_default(flag: &Option<PathBuf>) -> PathBuf {
    flag.clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// The `CODE: message` of a refused reply.
pub fn refusal(reply: &Reply) -> String {
    reply.error.as_ref().map_or_else(
        || "refused without a reason".to_string(),
        |e| format!("{}: {}", e.code, e.message),
    )
}

/// Runs `flotilla ask`.
pub fn ask(args: AskArgs) -> Result<ExitCode> {
    let reply = send(
        &args.target,
        &args.study,
        json!({"type": "ask", "n": args.n}),
    )?;
    if !reply.ok {
        eprintln!("error: ask refused: {}", refusal(&reply));
        return Ok(ExitCode::from(1));
    }
    print_json(&reply.result.unwrap_or(Value::Null))
}

/// Runs `flotilla tell`.
pub fn tell(args: TellArgs) -> Result<ExitCode> {
    let text = if args.results == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("results: cannot read stdin")?;
        text
    } else {
        std::fs::read_to_string(&args.results)
            .with_context(|| format!("results: cannot read {}", args.results))?
    };
    let results = parse_results(&text)?;
    let reply = send(
        &args.target,
        &args.study,
        json!({"type": "tell", "results": results}),
    )?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    if !reply.ok {
        eprintln!("error: tell refused: {}", refusal(&reply));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit status of `flotilla report` when the pruner says prune, so a
/// shell script can stop with `flotilla report ... || exit 0`.
pub const PRUNE_EXIT: u8 = 3;

/// Runs `flotilla report`: prints `{"trial_id", "action"}`, exits 0 on
/// `continue` and [`PRUNE_EXIT`] on `prune`.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let command =
        json!({"type": "report", "trial_id": args.trial, "step": args.step, "value": args.value});
    let reply = send(&args.target, &args.study, command)?;
    if !reply.ok {
        eprintln!("error: report refused: {}", refusal(&reply));
        return Ok(ExitCode::from(1));
    }
    let result = reply.result.unwrap_or(Value::Null);
    print_json(&result)?;
    Ok(match result["action"].as_str() {
        Some("prune") => ExitCode::from(PRUNE_EXIT),
        _ => ExitCode::SUCCESS,
    })
}

/// Runs `flotilla study ...`.
pub fn study(args: StudyArgs) -> Result<ExitCode> {
    match args.what {
        StudyWhat::Show(args) => show(args),
        StudyWhat::Watch(args) => crate::commands::watch::watch(args),
        StudyWhat::Stop(args) => crate::commands::watch::stop(args),
        StudyWhat::Pause(args) => crate::commands::watch::pause(args),
        StudyWhat::Resume(args) => crate::commands::watch::resume(args),
    }
}

fn show(args: StudyShowArgs) -> Result<ExitCode> {
    let reply = match &args.target.http {
        Some(base) => {
            validate_id("study", &args.study).map_err(|e| anyhow!("study: {e}"))?;
            let url = format!(
                "{}/v1/query/solver/{}",
                base.trim_end_matches('/'),
                args.study
            );
            http_reply(client()?.get(&url), &url)?
        }
        None => {
            let dir = data_dir_or_default(&args.target.data_dir);
            block_on(async {
                let study = EmbeddedStudy::open(&dir, &args.study, false).await?;
                Ok(study.core.query(None))
            })?
        }
    };
    if !reply.ok {
        eprintln!("error: {}", refusal(&reply));
        return Ok(ExitCode::from(1));
    }
    let view = reply.result.unwrap_or(Value::Null);
    if args.front {
        print!("{}", front_table(&view));
        return Ok(ExitCode::SUCCESS);
    }
    print_json(&view)
}

/// A study view's result as a table: the Pareto front (`best_trials`) of a
/// multi-objective study, one row per trial with its objectives (and
/// constraints, if any), or the best trial of a single-objective one.
fn front_table(view: &Value) -> String {
    let directions: Vec<String> = view["config"]["directions"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_else(|| {
            let direction = view["config"]["direction"].as_str().unwrap_or("minimize");
            vec![direction.to_string()]
        });
    let rows: Vec<&Value> = match view["best_trials"].as_array() {
        Some(front) => front.iter().collect(),
        None => view["best"]
            .as_object()
            .map(|_| &view["best"])
            .into_iter()
            .collect(),
    };
    let mut out = format!(
        "{} trial(s) on the {}\n{:<8}",
        rows.len(),
        if directions.len() > 1 {
            "Pareto front"
        } else {
            "best"
        },
        "trial"
    );
    for (k, d) in directions.iter().enumerate() {
        out.push_str(&format!(" {:>16}", format!("f{} ({})", k + 1, &d[..3])));
    }
    out.push_str("  constraints\n");
    for row in rows {
        let values = match row["values"].as_array() {
            Some(values) => values.clone(),
            None => vec![row["value"].clone()],
        };
        out.push_str(&format!("{:<8}", row["trial_id"].as_str().unwrap_or("?")));
        for v in &values {
            out.push_str(&format!(
                " {:>16}",
                v.as_f64().map_or("-".into(), |v| format!("{v:.6}"))
            ));
        }
        let constraints = row["constraints"].as_array().map_or(String::new(), |c| {
            let c: Vec<String> = c.iter().map(|v| v.to_string()).collect();
            format!("  [{}]", c.join(", "))
        });
        out.push_str(&constraints);
        out.push('\n');
    }
    out
}

fn print_json(value: &Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// Sends one command to the study, embedded or over HTTP.
fn send(target: &StudyTarget, study: &str, command: Value) -> Result<Reply> {
    match &target.http {
        Some(base) => {
            validate_id("study", study).map_err(|e| anyhow!("study: {e}"))?;
            let url = format!("{}/v1/cmd/solver/{study}", base.trim_end_matches('/'));
            http_reply(client()?.post(&url).json(&command), &url)
        }
        None => {
            let dir = data_dir_or_default(&target.data_dir);
            block_on(async {
                let mut study = EmbeddedStudy::open(&dir, study, false).await?;
                study.command(command).await
            })
        }
    }
}

fn client() -> Result<reqwest::blocking::Client> {
    crate::http_auth::client(Some(Duration::from_secs(30)))
}

fn http_reply(request: reqwest::blocking::RequestBuilder, url: &str) -> Result<Reply> {
    let body = request
        .send()
        .with_context(|| format!("cannot reach {url}"))?
        .bytes()?;
    serde_json::from_slice(&body)
        .with_context(|| format!("unexpected reply: {}", String::from_utf8_lossy(&body)))
}

/// Reads `[{trial_id, value, cost?}]` (also `{"results": [...]}` or one
/// result; `values: [..]` instead of `value` for a multi-objective study,
/// and `constraints: [..]`) into the solver's `results`. ArqonHPO's spelling is mapped:
/// `eval_id` is the trial id (`"t3"`) or its number (`3`), and `params` is
/// accepted and dropped (the trial id decides which trial it is).
pub fn parse_results(text: &str) -> Result<Vec<Value>> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| anyhow!("results: invalid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) if map.contains_key("results") => {
            if let Some(other) = map.keys().find(|k| *k != "results") {
                bail!("results: unknown field `{other}` next to `results`");
            }
            match map.remove("results") {
                Some(Value::Array(items)) => items,
                _ => bail!("results: `results` must be a list"),
            }
        }
        Value::Object(map) => vec![Value::Object(map)],
        _ => bail!("results: expected a list of {{\"trial_id\", \"value\", \"cost\"}}"),
    };
    if items.is_empty() {
        bail!("results: the list is empty");
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_result(item).map_err(|e| anyhow!("results[{i}]: {e}")))
        .collect()
}

fn parse_result(item: Value) -> Result<Value> {
    let Value::Object(fields) = item else {
        bail!("expected a map with trial_id and value");
    };
    let mut out = Map::new();
    for (key, value) in fields {
        match key.as_str() {
            "trial_id" | "eval_id" => {
                if out.contains_key("trial_id") {
                    bail!("give trial_id or eval_id, not both");
                }
                let id = match value {
                    Value::String(s) => s,
                    Value::Number(n) if n.as_u64().is_some() => format!("t{n}"),
                    other => {
                        bail!("{key}: expected a trial id like \"t3\" or a number, got {other}")
                    }
                };
                out.insert("trial_id".into(), Value::String(id));
            }
            "value" | "cost" => {
                if !value.is_number() {
                    bail!("{key}: expected a number, got {value}");
                }
                out.insert(key, value);
            }
            "values" | "constraints" => {
                let numbers = value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_number));
                if !numbers {
                    bail!("{key}: expected a list of numbers, got {value}");
                }
                out.insert(key, value);
            }
            "params" => {}
            other => bail!(
                "unknown field `{other}` (expected trial_id, value or values, constraints, cost)"
            ),
        }
    }
    if !out.contains_key("trial_id") {
        bail!("missing field `trial_id`");
    }
    match (out.contains_key("value"), out.contains_key("values")) {
        (false, false) => bail!("missing field `value` (or `values`, one per direction)"),
        (true, true) => bail!("values: give either `value` or `values`, not both"),
        _ => Ok(Value::Object(out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_accept_both_spellings() {
        let r = parse_results(r#"[{"eval_id": 3, "params": {"x": 1}, "value": 0.5, "cost": 2}, {"trial_id": "t4", "value": 1}]"#).unwrap();
        assert_eq!(
            r,
            vec![
                json!({"trial_id": "t3", "value": 0.5, "cost": 2}),
                json!({"trial_id": "t4", "value": 1})
            ]
        );
        let e = parse_results(r#"[{"trial_id": "t1"}]"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "results[0]: missing field `value` (or `values`, one per direction)"
        );
        let e = parse_results(r#"[{"trial_id": "t1", "value": 1, "x": 2}]"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
    }

    #[test]
    fn results_carry_values_and_constraints() {
        let r = parse_results(r#"{"trial_id": "t2", "values": [1, 2.5], "constraints": [-1]}"#)
            .unwrap();
        assert_eq!(
            r,
            vec![json!({"trial_id": "t2", "values": [1, 2.5], "constraints": [-1]})]
        );
        for (text, message) in [
            (
                r#"{"trial_id": "t2", "values": "x"}"#,
                "values: expected a list of numbers",
            ),
            (
                r#"{"trial_id": "t2", "value": 1, "constraints": [true]}"#,
                "constraints: expected",
            ),
            (
                r#"{"trial_id": "t2", "value": 1, "values": [1, 2]}"#,
                "either `value` or `values`",
            ),
        ] {
            let e = parse_results(text).unwrap_err().to_string();
            assert!(e.contains(message), "{e}");
        }
    }

    #[test]
    fn the_front_table_lists_each_trial_with_its_values() {
        let view = json!({
            "config": {"directions": ["minimize", "maximize"]},
            "best": null,
            "best_trials": [
                {"trial_id": "t2", "value": 0.5, "values": [0.5, 3.0]},
                {"trial_id": "t7", "value": 0.25, "values": [0.25, 1.0], "constraints": [-0.5]}
            ]
        });
        let table = front_table(&view);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "2 trial(s) on the Pareto front");
        assert!(
            lines[1].contains("f1 (min)") && lines[1].contains("f2 (max)"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("t2") && lines[2].contains("3.000000"),
            "{table}"
        );
        assert!(lines[3].ends_with("[-0.5]"), "{table}");
        let single = json!({"config": {}, "best": {"trial_id": "t1", "value": 1.5}});
        assert!(front_table(&single).contains("t1"));
    }
}
