//! The `local` executor: each attempt is a subprocess on this machine.
//!
//! An attempt gets a directory `<root>/<queue>/<job>/<attempt>/` holding
//! `stdout`, `stderr`, `handle.json` (pid, start time) and `exit` (the exit
//! status, written by a small `sh` wrapper when the command ends). Output
//! goes to files, not pipes, and the process runs in its own process group
//! without kill-on-drop, so it outlives a scheduler that is killed: a
//! restarted scheduler finds it by `handle.json` (pid plus start time, so a
//! recycled pid is not mistaken for it) or by the `FLOTILLA_ATTEMPT=<dispatch
//! event id>` variable in its environment, and adopts it. An attempt whose
//! process is gone left its exit status in `exit` and is collected; one
//! that left nothing is reported lost and runs again as a new attempt.
//!
//! The environment is the scheduler's, plus the spec's (extra env,
//! `SESSION_ID`, `WORKER_ID`, `MODE`, `ARQON_<name>`, `FLOTILLA_PARAM_<name>`,
//! `FLOTILLA_STUDY`, `FLOTILLA_TRIAL_ID`) and `FLOTILLA_JOB_ID`,
//! `FLOTILLA_ATTEMPT_NUMBER`, `FLOTILLA_ATTEMPT`, and `FLOTILLA_NODE` for an
//! attempt placed on a node of the queue's pool. A timeout sends SIGTERM to
//! the group, waits the spec's grace and sends SIGKILL.
//!
//! Only programs in the host's allowlist run ([`AllowedCommands`]; the
//! queue refuses others at submit). The executor checks again before it
//! starts an attempt, and before it adopts one: a job accepted under an
//! older list, or recovered after a restart, fails `COMMAND_NOT_ALLOWED`
//! (naming the program) instead of running, and an adopted process whose
//! program is no longer allowed is stopped. An attempt that already ended
//! is collected as it ended: it ran while it was allowed.

use crate::executor::{Attempt, Executor, Launch, NODE_ENV};
use crate::process::{
    env_of, exit_reason, find_by_env, group_command, group_leader, program_exists, stderr_detail,
    stop_group, success_outcome, tail, wait_or_stop, ProcessIdentity,
};
use crate::AllowedCommands;
use async_trait::async_trait;
use flotilla_host::unix_millis;
use flotilla_messages::scheduler::{
    ExecutorHandle, ExecutorKind, JobOutputs, JobSpec, Outcome, DEFAULT_KILL_GRACE_SECONDS,
    TAIL_CHARS,
};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variable that labels an attempt's processes.
pub const ATTEMPT_ENV: &str = "FLOTILLA_ATTEMPT";

/// How often an adopted process (not our child) is checked.
const POLL: Duration = Duration::from_millis(100);

/// The most of stdout read to find the result (its end).
const RESULT_WINDOW: u64 = 1 << 20;

/// Runs the command, then records its exit status atomically in
/// `$FLOTILLA_EXIT_FILE` (so a restarted scheduler can collect an attempt
/// that ended while nobody watched).
const WRAPPER: &str = r#""$@"; code=$?; echo "$code" > "$FLOTILLA_EXIT_FILE.tmp" && mv "$FLOTILLA_EXIT_FILE.tmp" "$FLOTILLA_EXIT_FILE"; exit "$code""#;

/// Subprocess attempts under one directory, of the allowed programs only.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    root: PathBuf,
    allowed: AllowedCommands,
}

/// `handle.json`: what a restarted scheduler needs to adopt the process.
#[derive(Debug, Serialize, Deserialize)]
struct HandleFile {
    pid: u32,
    start_ticks: u64,
    started_at: u64,
}

impl LocalExecutor {
    /// Attempts live under `root` (created on first use; made absolute,
    /// as handles and workdirs must not depend on the current directory)
    /// and run only the programs `allowed` names.
    pub fn new(root: impl Into<PathBuf>, allowed: AllowedCommands) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalExecutor { root, allowed }
    }

    /// The directory of one attempt.
    pub fn attempt_dir(&self, queue: &str, job_id: &str, attempt: u32) -> PathBuf {
        self.root.join(queue).join(job_id).join(attempt.to_string())
    }

    /// The live process of an attempt, when it started, and the directory
    /// holding its files: by its handle file, else by its label (then the
    /// directory is the one its environment names, in case the jobs
    /// directory moved since it started).
    fn find_live(dir: &Path, key: Option<&str>) -> Option<(ProcessIdentity, u64, PathBuf)> {
        if let Some(h) = read_handle(dir) {
            let identity = ProcessIdentity {
                pid: h.pid,
                start_ticks: h.start_ticks,
            };
            if identity.is_alive() {
                return Some((identity, h.started_at, dir.to_path_buf()));
            }
        }
        let key = key?;
        let leader = find_by_env(ATTEMPT_ENV, key)
            .into_iter()
            .min_by_key(|p| p.start_ticks)?;
        let own_dir = env_of(leader.pid, "FLOTILLA_EXIT_FILE")
            .and_then(|f| Path::new(&f).parent().map(Path::to_path_buf))
            .unwrap_or_else(|| dir.to_path_buf());
        let started_at = read_handle(&own_dir).map_or_else(unix_millis, |h| h.started_at);
        Some((leader, started_at, own_dir))
    }

    fn handle(dir: &Path, identity: ProcessIdentity, started_at: u64) -> ExecutorHandle {
        ExecutorHandle::Local {
            pid: identity.pid,
            start_ticks: identity.start_ticks,
            dir: dir.display().to_string(),
            started_at,
        }
    }

    fn spawn(&self, attempt: &Attempt, dir: &Path) -> Result<Launch, Outcome> {
        let spec = &attempt.spec;
        let workdir = spec.workdir.as_deref().map(Path::new);
        if let Some(w) = workdir.filter(|w| !w.is_dir()) {
            return Err(cannot_start(format!(
                "workdir {} is not a directory",
                w.display()
            )));
        }
        let program = &spec.command[0];
        if !program_exists(program, workdir) {
            return Err(cannot_start(format!(
                "program {program:?} not found (not an executable path, nor on PATH)"
            )));
        }
        let file = |name: &str| {
            std::fs::File::create(dir.join(name)).map_err(|e| {
                cannot_start(format!("cannot create {name} in {}: {e}", dir.display()))
            })
        };
        let (stdout, stderr) = (file("stdout")?, file("stderr")?);
        let wrapped: Vec<String> = ["/bin/sh", "-c", WRAPPER, "flotilla-job"]
            .into_iter()
            .map(String::from)
            .chain(spec.command.iter().cloned())
            .collect();
        let mut cmd = group_command(&wrapped, spec.environment(), workdir);
        cmd.env("FLOTILLA_EXIT_FILE", dir.join("exit"))
            .env("FLOTILLA_JOB_ID", &attempt.job_id)
            .env("FLOTILLA_ATTEMPT_NUMBER", attempt.attempt.to_string())
            .env(ATTEMPT_ENV, &attempt.key)
            .envs(attempt.node.as_ref().map(|node| (NODE_ENV, node)))
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(false);
        let started_at = unix_millis();
        let child = cmd
            .spawn()
            .map_err(|e| cannot_start(format!("cannot start {program:?}: {e}")))?;
        let identity = group_leader(&child);
        write_handle(dir, &identity, started_at);
        let handle = Self::handle(dir, identity, started_at);
        let end = watch_child(child, identity, dir.to_path_buf(), spec.clone(), started_at);
        Ok(Launch::Running {
            handle,
            adopted: false,
            end: end.boxed(),
        })
    }
}

/// The end of an attempt whose program is not allowed (`how`: `cannot
/// start` or `stopped`), naming the program and the setting.
fn not_allowed(how: &str, refusal: &flotilla_messages::Rejection) -> Outcome {
    Outcome::Failed {
        exit_code: None,
        reason: format!("{how}: {}: {}", refusal.code, refusal.message),
        outputs: JobOutputs::default(),
    }
}

fn cannot_start(reason: String) -> Outcome {
    Outcome::Failed {
        exit_code: None,
        reason: format!("cannot start: {reason}"),
        outputs: JobOutputs::default(),
    }
}

fn read_handle(dir: &Path) -> Option<HandleFile> {
    let text = std::fs::read_to_string(dir.join("handle.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_handle(dir: &Path, identity: &ProcessIdentity, started_at: u64) {
    let body = HandleFile {
        pid: identity.pid,
        start_ticks: identity.start_ticks,
        started_at,
    };
    let tmp = dir.join("handle.json.tmp");
    let written = serde_json::to_vec(&body)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, dir.join("handle.json")));
    if let Err(e) = written {
        // The process still carries its label: a restart finds it by that.
        tracing::warn!(dir = %dir.display(), error = %e, "attempt handle not written");
    }
}

fn grace(spec: &JobSpec) -> Duration {
    Duration::from_secs_f64(
        spec.kill_grace_seconds
            .unwrap_or(DEFAULT_KILL_GRACE_SECONDS),
    )
}

/// When the attempt's time is up, if it has a timeout.
fn deadline(spec: &JobSpec, started_at: u64) -> Option<tokio::time::Instant> {
    let limit = Duration::from_secs_f64(spec.timeout_seconds?);
    let elapsed = Duration::from_millis(unix_millis().saturating_sub(started_at));
    Some(tokio::time::Instant::now() + limit.saturating_sub(elapsed))
}

/// Waits for our own child (reaping it), enforcing the timeout.
async fn watch_child(
    mut child: tokio::process::Child,
    identity: ProcessIdentity,
    dir: PathBuf,
    spec: JobSpec,
    started_at: u64,
) -> Outcome {
    let waited = wait_or_stop(
        &mut child,
        identity,
        deadline(&spec, started_at),
        grace(&spec),
    )
    .await;
    match waited {
        Some(Ok(status)) => {
            // The group may hold what the command left running.
            crate::process::signal_group(identity.pid as i32, libc::SIGKILL);
            collect(&dir, &spec, status.code().or_else(|| read_exit(&dir)))
        }
        Some(Err(e)) => Outcome::Failed {
            exit_code: None,
            reason: format!("cannot wait for the process: {e}"),
            outputs: outputs(&dir),
        },
        None => timed_out(&dir, &spec),
    }
}

/// Waits for a process we adopted (not our child: it cannot be reaped, so
/// it is polled), enforcing the timeout.
async fn watch_adopted(
    identity: ProcessIdentity,
    dir: PathBuf,
    spec: JobSpec,
    started_at: u64,
) -> Outcome {
    let until = deadline(&spec, started_at);
    while identity.is_alive() {
        if until.is_some_and(|at| tokio::time::Instant::now() >= at) {
            stop_group(identity, grace(&spec)).await;
            return timed_out(&dir, &spec);
        }
        tokio::time::sleep(POLL).await;
    }
    match read_exit(&dir) {
        Some(code) => collect(&dir, &spec, Some(code)),
        None => lost(identity.pid),
    }
}

fn lost(pid: u32) -> Outcome {
    Outcome::Lost {
        reason: format!("process {pid} ended while the scheduler was down and left no exit status"),
    }
}

fn timed_out(dir: &Path, spec: &JobSpec) -> Outcome {
    Outcome::TimedOut {
        after_seconds: spec.timeout_seconds.unwrap_or_default(),
        outputs: outputs(dir),
    }
}

fn read_exit(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("exit"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The end of a file, at most `max` bytes, as text.
fn read_end(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = f.take(max).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn outputs(dir: &Path) -> JobOutputs {
    let window = (TAIL_CHARS as u64) * 4;
    JobOutputs {
        stdout_tail: tail(&read_end(&dir.join("stdout"), window), TAIL_CHARS),
        stderr_tail: tail(&read_end(&dir.join("stderr"), window), TAIL_CHARS),
        logs: Some(dir.display().to_string()),
    }
}

/// The outcome of an attempt that exited with `code`.
fn collect(dir: &Path, spec: &JobSpec, code: Option<i32>) -> Outcome {
    let outputs = outputs(dir);
    let detail = stderr_detail(&outputs.stderr_tail);
    match code {
        Some(0) => {
            let stdout = read_end(&dir.join("stdout"), RESULT_WINDOW);
            success_outcome(&stdout, spec.expects_value, Some(0), outputs, &detail)
        }
        // Only the code is known here (it may come from the exit file,
        // where the wrapper writes the command's): none means the wrapper
        // itself was killed.
        code => Outcome::Failed {
            exit_code: code,
            reason: format!("{}{detail}", exit_reason(code, None)),
            outputs,
        },
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Local
    }

    async fn launch(&self, attempt: &Attempt) -> Launch {
        let dir = self.attempt_dir(&attempt.queue, &attempt.job_id, attempt.attempt);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return Launch::Ended(cannot_start(format!(
                "cannot create {}: {e}",
                dir.display()
            )));
        }
        let refusal = self.allowed.check(&attempt.spec).err();
        if let Some((identity, started_at, own)) = Self::find_live(&dir, Some(&attempt.key)) {
            if let Some(refusal) = &refusal {
                // Started under an older list: it must not go on running.
                stop_group(identity, grace(&attempt.spec)).await;
                return Launch::Ended(not_allowed("stopped", refusal));
            }
            let handle = Self::handle(&own, identity, started_at);
            let end = watch_adopted(identity, own, attempt.spec.clone(), started_at);
            return Launch::Running {
                handle,
                adopted: true,
                end: end.boxed(),
            };
        }
        if let Some(code) = read_exit(&dir) {
            return Launch::Ended(collect(&dir, &attempt.spec, Some(code)));
        }
        if dir.join("stdout").exists() {
            let pid = read_handle(&dir).map_or(0, |h| h.pid);
            return Launch::Ended(lost(pid));
        }
        if let Some(refusal) = &refusal {
            return Launch::Ended(not_allowed("cannot start", refusal));
        }
        match self.spawn(attempt, &dir) {
            Ok(launch) => launch,
            Err(outcome) => Launch::Ended(outcome),
        }
    }

    async fn stop(&self, queue: &str, job_id: &str, attempt: u32, grace: Duration) {
        let dir = self.attempt_dir(queue, job_id, attempt);
        if let Some((identity, _, _)) = Self::find_live(&dir, None) {
            stop_group(identity, grace).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attempt(root: &Path, job: &str, command: &[&str]) -> (LocalExecutor, Attempt) {
        let executor = LocalExecutor::new(root, AllowedCommands::any());
        let attempt = Attempt {
            queue: "q".into(),
            job_id: job.into(),
            attempt: 1,
            spec: JobSpec::new(command.iter().map(|s| s.to_string()).collect()),
            key: format!("key-{job}-{}", std::process::id()),
            node: None,
        };
        (executor, attempt)
    }

    async fn run(executor: &LocalExecutor, attempt: &Attempt) -> Outcome {
        match executor.launch(attempt).await {
            Launch::Running { end, .. } => end.await,
            Launch::Ended(outcome) => outcome,
        }
    }

    #[tokio::test]
    async fn a_script_gets_its_environment_and_reports_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, mut a) = attempt(
            dir.path(),
            "env",
            &["sh", "-c", "echo \"$ARQON_lr $FLOTILLA_PARAM_n $SESSION_ID $WORKER_ID $MODE $EXTRA $PWD\" >&2; echo RESULT=0.25"],
        );
        a.spec.params.insert("lr".into(), json!(0.5));
        a.spec.params.insert("n".into(), json!(3));
        a.spec.session_id = Some("s1".into());
        a.spec.worker_id = Some("worker-1".into());
        a.spec.mode = Some("paper".into());
        a.spec.env.insert("EXTRA".into(), "x".into());
        a.spec.workdir = Some(dir.path().display().to_string());
        let Outcome::Succeeded { value, outputs } = run(&executor, &a).await else {
            panic!("not a success")
        };
        assert_eq!(value, Some(0.25));
        let expected = format!("0.5 3 s1 worker-1 paper x {}", dir.path().display());
        assert_eq!(outputs.stderr_tail.trim(), expected);
        assert_eq!(outputs.stdout_tail.trim(), "RESULT=0.25");
    }

    #[tokio::test]
    async fn bad_inputs_fail_with_clear_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, a) = attempt(dir.path(), "missing", &["no-such-program-flotilla"]);
        let Outcome::Failed { reason, .. } = run(&executor, &a).await else {
            panic!("not a failure")
        };
        assert!(
            reason.contains("\"no-such-program-flotilla\" not found"),
            "{reason}"
        );

        let (executor, a) = attempt(dir.path(), "garbage", &["sh", "-c", "echo hello world"]);
        let Outcome::Failed {
            exit_code, reason, ..
        } = run(&executor, &a).await
        else {
            panic!("not a failure")
        };
        assert_eq!(exit_code, Some(0));
        assert!(reason.contains("printed no number"), "{reason}");

        let (executor, a) = attempt(dir.path(), "exit3", &["sh", "-c", "echo oops >&2; exit 3"]);
        let Outcome::Failed {
            exit_code, reason, ..
        } = run(&executor, &a).await
        else {
            panic!("not a failure")
        };
        assert_eq!(exit_code, Some(3));
        assert_eq!(reason, "exited with status 3; stderr: oops");
    }

    #[tokio::test]
    async fn a_timeout_terminates_the_group_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, mut a) = attempt(dir.path(), "slow", &["sh", "-c", "sleep 30 & sleep 30"]);
        a.spec.timeout_seconds = Some(0.3);
        a.spec.kill_grace_seconds = Some(0.2);
        let outcome = run(&executor, &a).await;
        assert!(matches!(outcome, Outcome::TimedOut { after_seconds, .. } if after_seconds == 0.3));
        assert!(
            crate::process::group_vanishes(ATTEMPT_ENV, &a.key).await,
            "the group is gone"
        );
    }

    #[tokio::test]
    async fn a_second_launch_adopts_the_running_attempt_and_collects_a_finished_one() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, a) = attempt(dir.path(), "adopt", &["sh", "-c", "sleep 0.5; echo 7"]);
        let Launch::Running {
            end: first,
            adopted: false,
            handle,
        } = executor.launch(&a).await
        else {
            panic!("not started")
        };
        // A restarted scheduler launches the same attempt: it adopts.
        let Launch::Running {
            end: second,
            adopted: true,
            handle: again,
        } = executor.launch(&a).await
        else {
            panic!("not adopted")
        };
        assert_eq!(handle, again);
        let (one, two) = tokio::join!(first, second);
        assert!(matches!(one, Outcome::Succeeded { value: Some(v), .. } if v == 7.0));
        assert_eq!(one, two);
        // Launched once more after the end: collected from its exit file.
        let Launch::Ended(three) = executor.launch(&a).await else {
            panic!("started again")
        };
        assert_eq!(three, one);
    }

    #[tokio::test]
    async fn an_attempt_is_adopted_even_when_the_jobs_directory_moved() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        // Long enough to outlive both launches on a loaded machine.
        let (executor, a) = attempt(first.path(), "moved", &["sh", "-c", "sleep 2; echo 3"]);
        let Launch::Running { end: own, .. } = executor.launch(&a).await else {
            panic!("not started")
        };
        // A restarted scheduler comes later than the exec: until the kernel
        // has set up the new image, /proc shows no environment (spawn returns
        // once the child execs, a moment before), so wait for the label.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while find_by_env(ATTEMPT_ENV, &a.key).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never labelled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A scheduler restarted with another jobs directory finds the
        // process by its label, and its files where its environment says.
        let elsewhere = LocalExecutor::new(second.path(), AllowedCommands::any());
        let Launch::Running {
            end: adopted_end,
            adopted: true,
            handle,
        } = elsewhere.launch(&a).await
        else {
            panic!("not adopted")
        };
        let ExecutorHandle::Local { dir, .. } = handle else {
            panic!("not a local handle")
        };
        assert!(
            dir.starts_with(&first.path().display().to_string()),
            "{dir}"
        );
        let (one, two) = tokio::join!(own, adopted_end);
        assert!(
            matches!(two, Outcome::Succeeded { value: Some(v), .. } if v == 3.0),
            "{two:?}"
        );
        assert_eq!(one, two);
    }

    fn failure_reason(launch: Launch) -> String {
        match launch {
            Launch::Ended(Outcome::Failed {
                exit_code: None,
                reason,
                ..
            }) => reason,
            Launch::Ended(other) => panic!("not refused: {other:?}"),
            Launch::Running { .. } => panic!("started"),
        }
    }

    #[tokio::test]
    async fn a_program_not_allowed_is_never_started() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let touch = format!("touch {}", marker.display());
        let (_, a) = attempt(dir.path(), "refused", &["sh", "-c", &touch]);
        let only_jobs = AllowedCommands::parse(["/opt/flotilla-jobs/"]).unwrap();
        let executor = LocalExecutor::new(dir.path(), only_jobs);
        let reason = failure_reason(executor.launch(&a).await);
        assert!(
            reason.starts_with("cannot start: COMMAND_NOT_ALLOWED: program \"sh\""),
            "{reason}"
        );
        assert!(
            reason.contains("scheduler.local.allowed_commands"),
            "{reason}"
        );
        assert!(!marker.exists(), "the refused program ran");
        // Allowed by name, the same attempt runs.
        let by_name = LocalExecutor::new(dir.path(), AllowedCommands::parse(["sh"]).unwrap());
        let (_, mut a) = attempt(dir.path(), "allowed", &["sh", "-c", &touch]);
        a.spec.expects_value = false;
        assert!(matches!(run(&by_name, &a).await, Outcome::Succeeded { .. }));
        assert!(marker.exists());
    }

    #[tokio::test]
    async fn an_attempt_adopted_after_its_program_was_disallowed_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, a) = attempt(dir.path(), "revoked", &["sh", "-c", "sleep 30"]);
        let Launch::Running { end, .. } = executor.launch(&a).await else {
            panic!("not started")
        };
        // A scheduler restarted with a list that no longer allows `sh`.
        let restarted = LocalExecutor::new(dir.path(), AllowedCommands::none());
        let reason = failure_reason(restarted.launch(&a).await);
        assert!(
            reason.starts_with("stopped: COMMAND_NOT_ALLOWED"),
            "{reason}"
        );
        assert!(
            crate::process::group_vanishes(ATTEMPT_ENV, &a.key).await,
            "the group is gone"
        );
        assert!(!matches!(end.await, Outcome::Succeeded { .. }));
    }

    /// The executor conformance suite on real subprocesses under a temp
    /// jobs directory.
    mod conformance {
        use super::*;
        use crate::conformance::{self as suite, ExecutorCase, ExecutorHarness};
        use std::sync::Arc;

        struct LocalHarness {
            root: tempfile::TempDir,
        }

        #[async_trait]
        impl ExecutorHarness for LocalHarness {
            fn skip(_: ExecutorCase) -> Option<&'static str> {
                None
            }

            fn start(_: ExecutorCase) -> Self {
                let root = tempfile::tempdir().expect("a jobs directory");
                LocalHarness { root }
            }

            fn runs(&self) -> bool {
                true
            }

            fn executor(&self) -> Arc<dyn Executor> {
                Arc::new(LocalExecutor::new(self.root.path(), AllowedCommands::any()))
            }

            fn attempt(&self, case: ExecutorCase) -> Attempt {
                let mut attempt = suite::attempt(case);
                // Attempts are found by their label among all of this
                // user's processes: it must be this run's own.
                let run = self.root.path().file_name().unwrap_or_default();
                attempt.key = format!("{}-{}", attempt.key, run.to_string_lossy());
                attempt
            }

            async fn finish(self) {}
        }

        crate::executor_conformance_tests!(LocalHarness);
    }
}
