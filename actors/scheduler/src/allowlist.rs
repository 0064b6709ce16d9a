//! Which programs the `local` executor may run: the host's allowlist,
//! `scheduler.local.allowed_commands`.
//!
//! A local job runs a program on the control plane's own machine, so
//! whoever may submit one may run code there. The allowlist is host
//! configuration (a setting of `flotilla up`, never part of the log): the
//! queue's decider ([`crate::Queue`]) receives it as its
//! [`flotilla_host::Aggregate::Settings`] and refuses a job whose program
//! it does not allow when the job is submitted (`COMMAND_NOT_ALLOWED`,
//! nothing recorded); the [`crate::LocalExecutor`] checks again before it
//! starts or adopts an attempt, so a job accepted under an older list, or
//! recovered after a restart, does not run once its program is no longer
//! allowed. Kubernetes Jobs and manifests are not affected: their command
//! runs in a container, not on this machine.
//!
//! An entry is one of:
//!
//! - `*`: every program (the embedded loopback default);
//! - an absolute path ending in `/`, e.g. `/opt/jobs/`: every program
//!   under that directory, at any depth (`/opt/jobsx/a` is not under it);
//! - an entry ending in `*`, e.g. `/opt/jobs/train-*`: every program
//!   whose path starts with the text before the `*` (a plain prefix, not a
//!   glob: it also matches `/opt/jobs/train-a/b`); without a `/`, e.g.
//!   `python*`, a prefix of bare names;
//! - an absolute path, e.g. `/usr/bin/python3`: that program exactly;
//! - a bare name, e.g. `python3`: a job whose program is that bare name,
//!   which the executor finds on the control plane's `PATH`. A bare name
//!   never matches a path (`/tmp/x/python3` is not `python3`), and a bare
//!   program never matches a path entry: allowing a name trusts the
//!   control plane's `PATH`, allowing a path does not.
//!
//! The program (`command[0]`) and the entries are normalised lexically
//! before they are compared: `.` and empty components are dropped and
//! `..` removes the component before it, so `/usr/bin/../../tmp/x` is
//! `/tmp/x` and is not under `/usr/bin/`. A relative program path (with a
//! `/`, like `./train.sh`) is taken from the job's `workdir`, which must
//! then be absolute. Symbolic links are not followed (that would be I/O in
//! the decider): allow only directories whose contents you control.
//!
//! The list names programs, not arguments: allowing an interpreter
//! (`python3`, `sh`) allows whatever script it is given. And since a
//! program's environment can change which program runs or what it loads,
//! a job under a restricted list may not set `PATH`, `IFS`, `ENV`,
//! `BASH_ENV`, `SHELLOPTS`, `BASHOPTS`, `PS4` nor any `LD_*` or `DYLD_*`
//! variable.

use flotilla_messages::scheduler::JobSpec;
use flotilla_messages::{ErrorCode, Rejection};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The setting's name, as refusals and errors spell it.
pub const ALLOWED_COMMANDS_SETTING: &str = "scheduler.local.allowed_commands";

/// How to change the setting, for refusals.
const HOW_TO_ALLOW: &str =
    "scheduler.local.allowed_commands (flag --allowed-commands, env FLOTILLA_ALLOWED_COMMANDS)";

/// Environment variables a job under a restricted list may not set: they
/// change which program a name finds or what a program loads.
const LOADER_VARIABLES: &[&str] = &[
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    // What an allowed interpreter loads or runs besides its script.
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "BROWSER",
    "GCONV_PATH",
];

/// Prefixes of the dynamic loaders' variables (`LD_PRELOAD`, `DYLD_INSERT_LIBRARIES`).
const LOADER_PREFIXES: &[&str] = &["LD_", "DYLD_", "PYTHON", "BASH_FUNC_"];

/// The programs the local executor may run (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCommands {
    rules: Arc<[Rule]>,
}

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `*`.
    Any,
    /// A bare name, exactly.
    Name(String),
    /// Bare names starting with this.
    NamePrefix(String),
    /// A normalised absolute path, exactly.
    Exact(PathBuf),
    /// Everything under this normalised absolute directory.
    Under(PathBuf),
    /// Normalised absolute paths starting with this text.
    PathPrefix(String),
}

/// An entry of the setting that means nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ALLOWED_COMMANDS_SETTING}: entry {entry:?} {reason}")]
pub struct AllowlistError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The program of a job, placed for matching.
enum Program {
    /// A bare name (found on `PATH` when it runs).
    Name(String),
    /// A normalised absolute path.
    Path(PathBuf),
}

impl AllowedCommands {
    /// Every program: the embedded loopback default.
    pub fn any() -> Self {
        AllowedCommands {
            rules: Arc::new([Rule::Any]),
        }
    }

    /// No program: every local job is refused.
    pub fn none() -> Self {
        AllowedCommands {
            rules: Arc::new([]),
        }
    }

    /// The list the setting's `entries` name; blank entries are skipped, so
    /// an empty setting allows nothing.
    pub fn parse<S: AsRef<str>>(
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Self, AllowlistError> {
        let rules = entries
            .into_iter()
            .filter(|e| !e.as_ref().trim().is_empty())
            .map(|e| Rule::parse(e.as_ref().trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedCommands {
            rules: rules.into(),
        })
    }

    /// Whether every program is allowed.
    pub fn allows_all(&self) -> bool {
        self.rules.contains(&Rule::Any)
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the local executor may run `spec`: its program is allowed and,
    /// under a restricted list, its environment does not change what runs.
    /// The refusal (`COMMAND_NOT_ALLOWED`) names the program and the setting.
    pub fn check(&self, spec: &JobSpec) -> Result<(), Rejection> {
        if self.allows_all() {
            return Ok(());
        }
        let given = spec.command.first().map_or("", String::as_str);
        let program = Program::of(given, spec.workdir.as_deref())
            .map_err(|why| not_allowed(format!("program {given:?} {why}")))?;
        if !self.rules.iter().any(|rule| rule.matches(&program)) {
            let shown = match &program {
                Program::Path(path) if path.as_os_str() != given => {
                    format!("{given:?} (that is {})", path.display())
                }
                _ => format!("{given:?}"),
            };
            return Err(not_allowed(format!(
                "program {shown} is not allowed on the local executor; to allow it, add it to {HOW_TO_ALLOW}"
            )));
        }
        if let Some(name) = spec.env.keys().find(|name| is_loader_variable(name)) {
            return Err(not_allowed(format!(
                "env {name} would change which program runs or what {given:?} loads, \
                 and the local executor's programs are restricted by {HOW_TO_ALLOW}"
            )));
        }
        Ok(())
    }
}

fn not_allowed(message: String) -> Rejection {
    Rejection::new(ErrorCode::CommandNotAllowed, message)
}

/// A variable a restricted job may not set: one of the lists above, or a
/// name that is not a plain shell identifier (bash imports functions from
/// names like `BASH_FUNC_mv%%`, and the job runs under `/bin/sh`).
fn is_loader_variable(name: &str) -> bool {
    let identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    !identifier
        || LOADER_VARIABLES.contains(&name)
        || LOADER_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl fmt::Display for AllowedCommands {
    /// The entries as normalised, comma-separated; `(none)` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return f.write_str("(none)");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match rule {
                Rule::Any => f.write_str("*")?,
                Rule::Name(name) => f.write_str(name)?,
                Rule::NamePrefix(prefix) | Rule::PathPrefix(prefix) => write!(f, "{prefix}*")?,
                Rule::Exact(path) => write!(f, "{}", path.display())?,
                Rule::Under(dir) if dir == Path::new("/") => f.write_str("/")?,
                Rule::Under(dir) => write!(f, "{}/", dir.display())?,
            }
        }
        Ok(())
    }
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule, AllowlistError> {
        let error = |reason| AllowlistError {
            entry: entry.to_string(),
            reason,
        };
        if entry == "*" {
            return Ok(Rule::Any);
        }
        if entry.contains('\0') {
            return Err(error("contains a NUL byte"));
        }
        let (text, prefix) = match entry.strip_suffix('*') {
            Some(text) => (text, true),
            None => (entry, false),
        };
        if text.contains('*') {
            return Err(error(
                "has a `*` before its end (only a trailing `*` is a prefix)",
            ));
        }
        if !text.contains('/') {
            if !prefix && matches!(text, "." | "..") {
                return Err(error("is not a program name"));
            }
            return Ok(if prefix {
                Rule::NamePrefix(text.to_string())
            } else {
                Rule::Name(text.to_string())
            });
        }
        if !text.starts_with('/') {
            return Err(error(
                "is a relative path (give an absolute path, a directory ending in `/`, or a bare name)",
            ));
        }
        Ok(match (prefix, text.rsplit_once('/')) {
            (false, _) if text.ends_with('/') => Rule::Under(normalise(Path::new(text))),
            (false, _) => Rule::Exact(normalise(Path::new(text))),
            // `/opt/jobs/*`: the directory's contents.
            (true, Some((_, ""))) => Rule::Under(normalise(Path::new(text))),
            // `/opt/jobs/train-*`: names in the (normalised) directory.
            (true, Some((dir, stem))) => {
                let dir = normalise(Path::new(if dir.is_empty() { "/" } else { dir }));
                let mut text = dir.display().to_string();
                if !text.ends_with('/') {
                    text.push('/');
                }
                text.push_str(stem);
                Rule::PathPrefix(text)
            }
            (true, None) => unreachable!("the text contains a `/`"),
        })
    }

    fn matches(&self, program: &Program) -> bool {
        match (self, program) {
            (Rule::Any, _) => true,
            (Rule::Name(name), Program::Name(given)) => name == given,
            (Rule::NamePrefix(prefix), Program::Name(given)) => given.starts_with(prefix.as_str()),
            (Rule::Exact(path), Program::Path(given)) => path == given,
            (Rule::Under(dir), Program::Path(given)) => given.starts_with(dir) && given != dir,
            (Rule::PathPrefix(prefix), Program::Path(given)) => given
                .to_str()
                .is_some_and(|text| text.starts_with(prefix.as_str())),
            _ => false,
        }
    }
}

impl Program {
    /// Places `given` for matching: a bare name stays a name, a path is made
    /// absolute (from `workdir`) and normalised; the error says why it
    /// cannot be placed.
    fn of(given: &str, workdir: Option<&str>) -> Result<Program, &'static str> {
        if !given.contains('/') {
            return Ok(Program::Name(given.to_string()));
        }
        let path = Path::new(given);
        if path.is_absolute() {
            return Ok(Program::Path(normalise(path)));
        }
        match workdir.map(Path::new).filter(|w| w.is_absolute()) {
            Some(workdir) => Ok(Program::Path(normalise(&workdir.join(path)))),
            None => Err(
                "is a relative path and the job has no absolute workdir to place it: give an absolute path",
            ),
        }
    }
}

/// `path` (absolute) without `.`, empty components and `..` (which removes
/// the component before it; above the root it stays at the root), without
/// touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(entries: &[&str]) -> AllowedCommands {
        AllowedCommands::parse(entries).expect("valid entries")
    }

    fn job(command: &[&str]) -> JobSpec {
        JobSpec::new(command.iter().map(|s| s.to_string()).collect())
    }

    fn refusal(list: &AllowedCommands, command: &[&str]) -> String {
        let e = list.check(&job(command)).expect_err("refused");
        assert_eq!(e.code, ErrorCode::CommandNotAllowed);
        e.message
    }

    #[test]
    fn an_exact_path_allows_that_program_only() {
        let list = given(&["/usr/bin/python3"]);
        assert!(list.check(&job(&["/usr/bin/python3", "train.py"])).is_ok());
        assert!(list.check(&job(&["/usr/bin//./python3"])).is_ok());
        refusal(&list, &["/usr/bin/python3.11"]);
        refusal(&list, &["/usr/bin"]);
        refusal(&list, &["python3"]);
    }

    #[test]
    fn a_directory_allows_what_is_under_it_at_any_depth() {
        let list = given(&["/opt/jobs/"]);
        assert!(list.check(&job(&["/opt/jobs/train"])).is_ok());
        assert!(list.check(&job(&["/opt/jobs/a/b/eval.sh"])).is_ok());
        refusal(&list, &["/opt/jobsx/train"]);
        refusal(&list, &["/opt/jobs"]);
        refusal(&list, &["/opt/jobs/"]);
        // `/opt/jobs/*` is the same directory.
        assert_eq!(given(&["/opt/jobs/*"]), list);
    }

    #[test]
    fn a_trailing_star_is_a_plain_prefix() {
        let list = given(&["/opt/jobs/train-*", "python*"]);
        assert!(list.check(&job(&["/opt/jobs/train-a"])).is_ok());
        assert!(list.check(&job(&["/opt/jobs/train-a/b"])).is_ok());
        assert!(list.check(&job(&["python3.11"])).is_ok());
        refusal(&list, &["/opt/jobs/eval"]);
        refusal(&list, &["/usr/bin/python3"]);
        let root = given(&["/train-*"]);
        assert!(root.check(&job(&["/train-x"])).is_ok());
        refusal(&root, &["/opt/train-x"]);
    }

    #[test]
    fn dot_dot_cannot_leave_an_allowed_directory() {
        let list = given(&["/usr/bin/", "/opt/jobs/train-*"]);
        let message = refusal(&list, &["/usr/bin/../../tmp/x"]);
        assert!(
            message.contains("\"/usr/bin/../../tmp/x\" (that is /tmp/x)"),
            "{message}"
        );
        refusal(&list, &["/usr/bin/../../../../../tmp/x"]);
        refusal(&list, &["/opt/jobs/train-../../../tmp/x"]);
        refusal(&list, &["/usr/bin/.."]);
        assert!(list.check(&job(&["/usr/bin/../bin/sh"])).is_ok());
        assert!(list.check(&job(&["/usr/lib/../bin/sh"])).is_ok());
        // An entry with `..` means where it leads.
        let odd = given(&["/opt/x/../jobs/"]);
        assert!(odd.check(&job(&["/opt/jobs/a"])).is_ok());
        refusal(&odd, &["/opt/x/a"]);
    }

    #[test]
    fn a_relative_program_is_placed_by_an_absolute_workdir() {
        let list = given(&["/srv/run/"]);
        let mut spec = job(&["./eval.sh"]);
        spec.workdir = Some("/srv/run".into());
        assert!(list.check(&spec).is_ok());
        spec.command[0] = "../../tmp/x".into();
        assert_eq!(
            list.check(&spec).unwrap_err().code,
            ErrorCode::CommandNotAllowed
        );
        spec.workdir = None;
        spec.command[0] = "./eval.sh".into();
        let e = list.check(&spec).unwrap_err();
        assert!(e.message.contains("no absolute workdir"), "{}", e.message);
    }

    #[test]
    fn a_bare_name_matches_only_that_name() {
        let list = given(&["python3"]);
        assert!(list.check(&job(&["python3", "-c", "print(1)"])).is_ok());
        refusal(&list, &["/tmp/evil/python3"]);
        refusal(&list, &["./python3"]);
        refusal(&list, &["python"]);
        // And a path entry does not allow the bare name.
        refusal(&given(&["/usr/bin/python3"]), &["python3"]);
    }

    #[test]
    fn a_refusal_names_the_program_and_the_setting() {
        let message = refusal(&given(&["/opt/jobs/"]), &["sh", "-c", "id"]);
        assert!(message.contains("program \"sh\""), "{message}");
        assert!(message.contains(ALLOWED_COMMANDS_SETTING), "{message}");
        assert!(message.contains("--allowed-commands"), "{message}");
    }

    #[test]
    fn an_empty_list_refuses_everything() {
        let list = AllowedCommands::parse(["", " "]).unwrap();
        assert!(list.is_empty());
        assert_eq!(list, AllowedCommands::none());
        for command in [&["true"][..], &["/bin/true"], &["/"]] {
            refusal(&list, command);
        }
        assert_eq!(list.to_string(), "(none)");
    }

    #[test]
    fn allow_all_allows_anything_and_any_environment() {
        let list = given(&["/opt/jobs/", "*"]);
        assert!(list.allows_all());
        let mut spec = job(&["../anything"]);
        spec.env.insert("LD_PRELOAD".into(), "/tmp/x.so".into());
        assert!(list.check(&spec).is_ok());
        assert!(AllowedCommands::any().check(&spec).is_ok());
    }

    #[test]
    fn a_restricted_list_refuses_what_changes_the_program_s_loading() {
        let list = given(&["python3", "/opt/jobs/"]);
        for name in [
            "PATH",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "BASH_ENV",
            "SHELLOPTS",
            "BASH_FUNC_mv%%",
            "PYTHONWARNINGS",
            "PYTHONPATH",
            "PERL5OPT",
            "NODE_OPTIONS",
            "JAVA_TOOL_OPTIONS",
            "BROWSER",
            "A-B",
            "",
        ] {
            let mut spec = job(&["python3"]);
            spec.env.insert(name.into(), "/tmp".into());
            let e = list.check(&spec).unwrap_err();
            assert_eq!(e.code, ErrorCode::CommandNotAllowed);
            assert!(
                e.message.starts_with(&format!("env {name} ")),
                "{}",
                e.message
            );
        }
        let mut spec = job(&["python3"]);
        spec.env.insert("CUDA_VISIBLE_DEVICES".into(), "0".into());
        assert!(list.check(&spec).is_ok());
    }

    #[test]
    fn entries_that_mean_nothing_are_refused_naming_the_setting() {
        for (entry, why) in [
            ("bin/python3", "relative path"),
            ("./x", "relative path"),
            ("/opt/*/x", "before its end"),
            ("..", "not a program name"),
        ] {
            let e = AllowedCommands::parse([entry]).unwrap_err();
            assert_eq!(e.entry, entry);
            let text = e.to_string();
            assert!(text.starts_with(ALLOWED_COMMANDS_SETTING), "{text}");
            assert!(text.contains(why), "{entry}: {text}");
        }
    }

    #[test]
    fn the_list_displays_as_normalised_entries() {
        let list = given(&[
            "/usr/bin/../bin/python3",
            "/opt/jobs/",
            "sh",
            "/opt/x/../t-*",
            "/",
        ]);
        assert_eq!(
            list.to_string(),
            "/usr/bin/python3,/opt/jobs/,sh,/opt/t-*,/"
        );
    }
}
