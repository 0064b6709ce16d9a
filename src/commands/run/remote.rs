//! `flotilla run --remote URL` / `--nats URL`: the study run by a running
//! control plane, not by this process. The config is checked as the local
//! run checks it ([`Plan`]); the study is created there (an existing study
//! with the same config is resumed, one with another config refused), the
//! run started with `start_run` (the script as the command, `--parallel`,
//! `--timeout`, `--executor`, `--image`), then followed
//! ([`crate::commands::watch::follow`]) to the local run's summary and exit
//! status. Ctrl-C detaches; the run goes on.
//!
//! On the local executor the control plane runs the script by its
//! absolute path, so it must be a file here (the same machine, or a path
//! both see); on `kubernetes` and `manifests` it is the container's
//! command, as with the local `--executor kubernetes`.

use super::config::{Plan, Script};
use super::same_study;
use crate::cli::RunArgs;
use crate::commands::block_on;
use crate::commands::remote::{ControlPlane, Endpoint};
use crate::commands::study::refusal;
use crate::commands::watch::{follow, Interrupt};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_messages::scheduler::ExecutorKind;
use flotilla_messages::study_run::{RunCommand, RunSpec};
use flotilla_messages::Actor;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

/// Runs `flotilla run --remote`/`--nats`.
pub(super) fn run(args: &RunArgs) -> Result<ExitCode> {
    if args.state.is_some() {
        bail!("state: --state is not supported with --remote/--nats; the study is in the control plane (flotilla study show --http URL)");
    }
    let endpoint = match (&args.remote, &args.nats) {
        (Some(url), _) => Endpoint::Http(url.clone()),
        (None, Some(url)) => Endpoint::Nats(url.clone()),
        (None, None) => bail!("remote: a control plane is needed (--remote URL or --nats URL)"),
    };
    let plan = Plan::from_args(args)?;
    let spec = run_spec(args, &plan)?;
    block_on(async {
        // Before anything is started: no Ctrl-C may fall between starting
        // the run and following it.
        let mut interrupt = Interrupt::register()?;
        let cp = ControlPlane::connect(&endpoint, &args.nats_auth, &args.prefix).await?;
        create_or_resume(&cp, &plan).await?;
        start(&cp, &plan.study, &spec).await?;
        eprintln!(
            "study {}: running in the control plane at {} (Ctrl-C detaches; the run goes on)",
            plan.study,
            cp.shown()
        );
        follow(&cp, &plan.study, &mut interrupt).await
    })
}

/// The run's spec from the flags, checked as the run checks it.
fn run_spec(args: &RunArgs, plan: &Plan) -> Result<RunSpec> {
    let executor = match args.executor.as_deref().unwrap_or("local") {
        "local" => ExecutorKind::Local,
        "kubernetes" => ExecutorKind::Kubernetes,
        "manifests" => ExecutorKind::Manifests,
        other => {
            bail!("executor: {other:?} is not available (expected local, kubernetes or manifests)")
        }
    };
    let image = args.image.clone();
    match (executor, &image) {
        (ExecutorKind::Local, Some(_)) => {
            bail!("image: only with --executor kubernetes or manifests")
        }
        (ExecutorKind::Local, None) => {}
        (_, Some(image)) if !image.trim().is_empty() => {}
        (_, _) => bail!(
            "image: --executor {} needs --image (the trials' container image)",
            executor.as_str()
        ),
    }
    let command = match executor {
        ExecutorKind::Local => local_command(&args.script)?,
        _ => plan.script.argv(),
    };
    let parallel = u32::try_from(plan.parallel).map_err(|_| {
        anyhow!(
            "parallel: at most {}",
            flotilla_messages::study_run::MAX_PARALLEL
        )
    })?;
    let spec = RunSpec {
        executor,
        command,
        image,
        parallel,
        timeout_seconds: plan.timeout.map(|t| t.as_secs_f64()),
        pool: None,
        backoff_limit: 0,
        env: Default::default(),
    };
    spec.validate().map_err(|r| {
        let message = r.message.strip_prefix("start_run: ").unwrap_or(&r.message);
        anyhow!("{message}")
    })?;
    Ok(spec)
}

/// The script as the control plane's local executor runs it: by its
/// absolute path (an executable file), or `sh <path>`.
fn local_command(script: &str) -> Result<Vec<String>> {
    let path = Path::new(script);
    if !path.is_file() {
        bail!(
            "script: {script}: no such file (with --remote/--nats the control plane runs the \
             script by its absolute path)"
        );
    }
    let absolute =
        std::fs::canonicalize(path).with_context(|| format!("script: {script}: cannot resolve"))?;
    let executable = std::fs::metadata(&absolute)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    let script = match executable {
        true => Script::Exec(absolute),
        false => Script::Sh(absolute),
    };
    Ok(script.argv())
}

/// Creates the study in the control plane, or checks that the one there
/// has the same config.
async fn create_or_resume(cp: &ControlPlane, plan: &Plan) -> Result<()> {
    let reply = cp.command(Actor::Solver, &plan.study, &plan.create).await?;
    if reply.ok {
        return Ok(());
    }
    let exists = reply
        .error
        .as_ref()
        .is_some_and(|e| e.code == "ALREADY_EXISTS");
    if !exists {
        bail!("config {}: {}", plan.config_path.display(), refusal(&reply));
    }
    let stored = cp.query(Actor::Solver, &plan.study).await?;
    if !stored.ok {
        bail!("solver/{}: {}", plan.study, refusal(&stored));
    }
    let stored = stored.result.unwrap_or_default();
    if !same_study(&plan.config, &stored["config"]) {
        bail!(
            "study {} at {} exists with a different config than {}; \
             pick another name with --study",
            plan.study,
            cp.shown(),
            plan.config_path.display()
        );
    }
    eprintln!("resuming study {}", plan.study);
    Ok(())
}

/// Starts the run. The same spec on a run that is on already changes
/// nothing (the follower re-attaches); a finished run is only followed to
/// its summary.
async fn start(cp: &ControlPlane, study: &str, spec: &RunSpec) -> Result<()> {
    let command = serde_json::to_value(RunCommand::StartRun(spec.clone()))?;
    let reply = cp.command(Actor::StudyRun, study, &command).await?;
    if reply.ok {
        if reply.events.as_ref().is_some_and(Vec::is_empty) {
            eprintln!("study {study}: its run is on already; following it");
        }
        return Ok(());
    }
    let invalid_state = reply
        .error
        .as_ref()
        .is_some_and(|e| e.code == "INVALID_STATE");
    if invalid_state {
        let run = cp.query(Actor::StudyRun, study).await?;
        if run.ok
            && run
                .result
                .as_ref()
                .is_some_and(|r| r["status"] == "finished")
        {
            eprintln!("study {study}: its run finished already");
            return Ok(());
        }
    }
    bail!("{}", refusal(&reply))
}
