//! What every subprocess runner in Flotilla shares: starting a command in
//! a process group of its own, waiting for it until its deadline and then
//! stopping the group (SIGTERM, a grace period, SIGKILL), wording how it
//! ended (its exit, the end of its stderr), reading a result from its stdout
//! the way ArqonHPO does, and identifying a live process by pid and start
//! time so a restarted scheduler can tell its own process from a recycled
//! pid.
//!
//! `flotilla run` (the solver's ArqonHPO-compatible loop, whose trials run
//! attached with their output piped) and the scheduler's local executor
//! ([`crate::local`], whose attempts outlive it) both use it.

use flotilla_messages::scheduler::{JobOutputs, Outcome};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// A command that starts `argv` in a process group of its own (so that a
/// stop reaches whatever it starts too), with `env` on top of ours, stdin
/// closed, in `workdir` (ours when `None`). The caller picks where its
/// output goes and whether it dies with its handle.
pub fn group_command(
    argv: &[String],
    env: Vec<(String, String)>,
    workdir: Option<&Path>,
) -> tokio::process::Command {
    let (program, args) = argv
        .split_first()
        .map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    cmd
}

/// The leader of the process group a [`group_command`] just started.
pub fn group_leader(child: &tokio::process::Child) -> ProcessIdentity {
    let pid = child.id().unwrap_or(0);
    ProcessIdentity::of(pid).unwrap_or(ProcessIdentity {
        pid,
        start_ticks: 0,
    })
}

/// Waits for `child` (the `leader` of its own group) to exit, until
/// `deadline`; past it, stops the group ([`stop_group`] with `grace`),
/// reaps the child and returns `None`.
pub async fn wait_or_stop(
    child: &mut tokio::process::Child,
    leader: ProcessIdentity,
    deadline: Option<tokio::time::Instant>,
    grace: Duration,
) -> Option<std::io::Result<ExitStatus>> {
    let waited = match deadline {
        Some(at) => tokio::time::timeout_at(at, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    if waited.is_none() {
        stop_group(leader, grace).await;
        let _ = child.wait().await;
    }
    waited
}

/// How a process ended, as a failure's reason says it: `exited with
/// status 3`, `killed by signal 9`, or `killed by a signal` when which one
/// is not known.
pub fn exit_reason(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "killed by a signal".to_string(),
    }
}

/// The end of a process's stderr for a failure's reason: `; stderr: ` and
/// its last three non-blank lines joined by ` | ` (nothing when it wrote
/// none).
pub fn stderr_detail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(3);
    format!("; stderr: {}", lines[from..].join(" | "))
}

/// The outcome of an attempt that ended well (exit 0, a completed Job):
/// its value read from `output`, required when `expects_value` (its
/// absence is then a failure whose reason ends with `detail`).
pub fn success_outcome(
    output: &str,
    expects_value: bool,
    exit_code: Option<i32>,
    outputs: JobOutputs,
    detail: &str,
) -> Outcome {
    match (parse_result(output), expects_value) {
        (Ok(value), _) => Outcome::Succeeded {
            value: Some(value),
            outputs,
        },
        (Err(_), false) => Outcome::Succeeded {
            value: None,
            outputs,
        },
        (Err(reason), true) => Outcome::Failed {
            exit_code,
            reason: format!("{reason}{detail}"),
            outputs,
        },
    }
}

/// The value a script reported: the last `RESULT=<float>` line, else the
/// last line that is a number. It must be finite.
pub fn parse_result(stdout: &str) -> Result<f64, String> {
    let lines: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let value = match lines.iter().rev().find_map(|l| l.strip_prefix("RESULT=")) {
        Some(text) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("RESULT={text} is not a number"))?,
        None => lines
            .iter()
            .rev()
            .find_map(|l| l.parse::<f64>().ok())
            .ok_or_else(|| {
                let last = lines.last().map_or("(no output)".to_string(), |l| {
                    format!("last line {:?}", l.chars().take(80).collect::<String>())
                });
                format!(
                    "the script printed no number (expected RESULT=<float> or a number; {last})"
                )
            })?,
    };
    if !value.is_finite() {
        return Err(format!("the script's result {value} is not finite"));
    }
    Ok(value)
}

/// The last `max` characters of `text` (on a character boundary).
pub fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(max)).collect()
}

/// Signals the process group `pgid` (created for one of our children with
/// `process_group(0)`, so its id is the child's pid): the script and
/// whatever it started.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; the negative
        // pid addresses only a group created for our own child.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// A process as `/proc` shows it: enough to know it is the one we started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

impl ProcessIdentity {
    /// Reads `pid`'s identity; `None` if there is no such process or it is
    /// a zombie (it has exited).
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces and parentheses: the
        // fields after it start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); field 22 is rest[19].
        if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
            return None;
        }
        let start_ticks = fields.get(19)?.parse().ok()?;
        Some(ProcessIdentity { pid, start_ticks })
    }

    /// Whether this very process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        ProcessIdentity::of(self.pid).is_some_and(|now| now == *self)
    }
}

/// The live processes whose environment holds `NAME=value` exactly (our
/// own processes only: others' environments are not readable).
pub fn find_by_env(name: &str, value: &str) -> Vec<ProcessIdentity> {
    let wanted = format!("{name}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
        })
        .filter_map(ProcessIdentity::of)
        .collect()
}

/// The value of variable `name` in the environment process `pid` started
/// with (our own processes only).
pub fn env_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(prefix.as_bytes())?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// Stops process group `pgid` whose leader is `leader`: SIGTERM, up to
/// `grace` for it to exit, then SIGKILL. Whatever else runs in the group
/// gets SIGKILL at the end too.
pub async fn stop_group(leader: ProcessIdentity, grace: Duration) {
    let pgid = leader.pid as i32;
    signal_group(pgid, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while leader.is_alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pgid, libc::SIGKILL);
}

/// Whether `program` names something that can be run: a path to an
/// executable file (relative to `workdir`), or a name found on `PATH`.
pub fn program_exists(program: &str, workdir: Option<&Path>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = Path::new(program);
        let path = match workdir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        return executable(&path);
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
    })
}

/// Test support: waits (up to 5 s) until no live process holds `NAME=value`
/// and says whether that happened. A SIGKILLed process is gone only once
/// the kernel has run it to its exit, which on a loaded machine can take a
/// while after `kill` returns.
#[cfg(test)]
pub(crate) async fn group_vanishes(name: &str, value: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !find_by_env(name, value).is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read_like_arqonhpo() {
        assert_eq!(parse_result("hello\nRESULT=1.5\n2.0\n"), Ok(1.5));
        assert_eq!(parse_result("x\n3.25\ndone\n"), Ok(3.25));
        assert!(parse_result("nothing here\n")
            .unwrap_err()
            .contains("no number"));
        assert!(parse_result("RESULT=abc")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_result("NaN").unwrap_err().contains("not finite"));
        assert!(parse_result("").unwrap_err().contains("(no output)"));
    }

    #[test]
    fn endings_are_worded_for_reasons() {
        assert_eq!(exit_reason(Some(3), None), "exited with status 3");
        assert_eq!(exit_reason(None, Some(9)), "killed by signal 9");
        assert_eq!(exit_reason(None, None), "killed by a signal");
        assert_eq!(stderr_detail(" \n"), "");
        assert_eq!(stderr_detail("a\n\nb\nc\nd\n"), "; stderr: b | c | d");
    }

    #[tokio::test]
    async fn a_group_past_its_deadline_is_stopped() {
        let mark = format!("stop-me-{}", std::process::id());
        let argv = ["sh", "-c", "sleep 30 & sleep 30"].map(String::from);
        let env = vec![("FLOTILLA_TEST_GROUP".to_string(), mark.clone())];
        let mut child = group_command(&argv, env, None).spawn().unwrap();
        let leader = group_leader(&child);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let grace = Duration::from_millis(200);
        let waited = wait_or_stop(&mut child, leader, Some(deadline), grace).await;
        assert!(waited.is_none(), "stopped, not exited");
        assert!(
            group_vanishes("FLOTILLA_TEST_GROUP", &mark).await,
            "the group is gone"
        );
    }

    #[test]
    fn tails_keep_the_last_characters() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
        assert_eq!(tail("añb", 2), "ñb");
    }

    #[test]
    fn our_own_process_is_identified_and_found_by_env() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        let recycled = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!recycled.is_alive());
        let child = std::process::Command::new("sleep")
            .arg("5")
            .env("FLOTILLA_TEST_MARK", "find-me-42")
            .spawn()
            .unwrap();
        let found = find_by_env("FLOTILLA_TEST_MARK", "find-me-42");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pid, child.id());
        assert_eq!(
            env_of(child.id(), "FLOTILLA_TEST_MARK").as_deref(),
            Some("find-me-42")
        );
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(find_by_env("FLOTILLA_TEST_MARK", "find-me-42").is_empty());
    }

    #[test]
    fn programs_are_found_on_the_path_or_by_path() {
        assert!(program_exists("sh", None));
        assert!(program_exists("/bin/sh", None));
        assert!(!program_exists("no-such-program-flotilla", None));
        assert!(!program_exists(
            "./no-such-script.sh",
            Some(Path::new("/tmp"))
        ));
    }
}
