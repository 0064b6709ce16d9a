//! The plan of a run, checked before the log is opened: the ArqonHPO
//! config file (every field goes into `create_study`, so an unknown or
//! missing one is refused naming it), the study's name (`--study`, else the
//! one the state file records, else the config file's name), the script
//! and the timeout.

use super::state_file::StateFile;
use crate::cli::RunArgs;
use crate::commands::id_chars;
use crate::commands::study::data_dir_or_default;
use anyhow::{anyhow, bail, Context, Result};
use flotilla_messages::solver::{SolverCommand, StudyConfig, COMMAND_TYPES};
use flotilla_messages::CommandRequest;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Everything `run` needs, checked before the log is opened.
pub(super) struct Plan {
    /// The config file (`--config`).
    pub(super) config_path: PathBuf,
    /// The config file as written (the state file's `config`).
    pub(super) raw_config: Value,
    /// The study's config, as the solver read it.
    pub(super) config: StudyConfig,
    /// The `create_study` command built from the file.
    pub(super) create: Value,
    /// The study's id.
    pub(super) study: String,
    /// The embedded log's directory.
    pub(super) data_dir: PathBuf,
    /// The state file (`--state`), if any.
    pub(super) state_path: Option<PathBuf>,
    /// The state file as an earlier run left it.
    pub(super) previous: Option<StateFile>,
    /// What evaluates a trial.
    pub(super) script: Arc<Script>,
    /// How many trials run at once.
    pub(super) parallel: usize,
    /// How long a trial may run.
    pub(super) timeout: Option<Duration>,
}

impl Plan {
    /// Checks the arguments and reads the config (and the state file, if
    /// there is one).
    pub(super) fn from_args(args: &RunArgs) -> Result<Self> {
        if args.parallel == 0 {
            bail!("parallel: must be at least 1");
        }
        let timeout = args.timeout.as_deref().map(parse_duration).transpose()?;
        let (raw_config, config, create) = load_config(&args.config)?;
        let previous = match &args.state {
            Some(path) if path.exists() => Some(StateFile::load(path)?),
            _ => None,
        };
        let recorded = previous
            .as_ref()
            .and_then(|s| s.flotilla.as_ref())
            .map(|f| f.study.clone());
        let study = match (&args.study, recorded) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => s,
            (None, None) => study_name(&args.config),
        };
        flotilla_messages::validate_id("study", &study).map_err(|e| anyhow!("study: {e}"))?;
        Ok(Plan {
            config_path: args.config.clone(),
            raw_config,
            config,
            create,
            study,
            data_dir: data_dir_or_default(&args.data_dir),
            state_path: args.state.clone(),
            previous,
            script: Arc::new(Script::parse(&args.script)),
            parallel: args.parallel,
            timeout,
        })
    }
}

/// Reads the ArqonHPO config: every field goes into `create_study`, so
/// unknown or missing fields are refused naming the field.
fn load_config(path: &Path) -> Result<(Value, StudyConfig, Value)> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config {shown}: cannot read"))?;
    let raw: Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("config {shown}: invalid JSON: {e}"))?;
    let Value::Object(mut fields) = raw.clone() else {
        bail!("config {shown}: expected a JSON object with seed, budget and bounds");
    };
    for reserved in ["type", "command_id", "expected_seq"] {
        if fields.contains_key(reserved) {
            bail!("config {shown}: unknown field `{reserved}`");
        }
    }
    // The field's path (`bounds.x.scale`) makes the message precise.
    if let Err(e) = serde_path_to_error::deserialize::<_, StudyConfig>(&raw) {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path != "." && !message.starts_with(&path) {
            bail!("config {shown}: {path}: {message}");
        }
    }
    fields.insert("type".into(), json!("create_study"));
    let create = Value::Object(fields);
    let request = CommandRequest::from_value(create.clone(), None)
        .map_err(|r| anyhow!("config {shown}: {}", r.message))?;
    let command: SolverCommand = request
        .parse("solver", COMMAND_TYPES)
        .map_err(|r| anyhow!("config {shown}: {}", strip_command(&r.message)))?;
    let SolverCommand::CreateStudy(config) = command else {
        bail!("config {shown}: not a study config");
    };
    Ok((raw, config, create))
}

/// `create_study: missing field ...` reads as `missing field ...` in a
/// config file's error.
fn strip_command(message: &str) -> &str {
    message.strip_prefix("create_study: ").unwrap_or(message)
}

/// The study id from the config file's name: `my conf.json` → `my-conf`.
fn study_name(config: &Path) -> String {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = id_chars(&stem, 64);
    if name.is_empty() {
        "study".into()
    } else {
        name
    }
}

/// `90`, `90s`, `1.5s`, `500ms`, `5m`, `1h`.
fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => bail!("timeout: unknown unit in {text:?} (use ms, s, m or h)"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| anyhow!("timeout: {text:?} is not a duration like 60s"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("timeout: must be positive, got {text:?}");
    }
    Ok(Duration::from_secs_f64(n * scale))
}

/// How a trial's script is started.
#[derive(Debug)]
pub(super) enum Script {
    /// An executable file.
    Exec(PathBuf),
    /// A file without the executable bit: `sh <file>`.
    Sh(PathBuf),
    /// Anything else: `sh -c <line>`.
    Line(String),
}

impl Script {
    /// An existing file is run (with `sh` unless it is executable); any
    /// other text is a shell command line.
    fn parse(text: &str) -> Script {
        let path = Path::new(text);
        if !path.is_file() {
            return Script::Line(text.to_string());
        }
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let executable = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if executable {
            Script::Exec(absolute)
        } else {
            Script::Sh(absolute)
        }
    }

    /// The program and its arguments.
    pub(super) fn argv(&self) -> Vec<String> {
        match self {
            Script::Exec(path) => vec![path.display().to_string()],
            Script::Sh(path) => vec!["sh".into(), path.display().to_string()],
            Script::Line(line) => vec!["sh".into(), "-c".into(), line.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_names() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(study_name(Path::new("dir/my conf.json")), "my-conf");
    }
}
