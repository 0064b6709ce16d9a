//! `flotilla up`: runs the actors and the gateway until SIGINT or SIGTERM.
//!
//! Start-up order matters for readiness: the actors subscribe first (so no
//! command is lost while recovering — it waits in its aggregate's mailbox),
//! the gateway answers `/readyz` with 503, every aggregate in the log is
//! recovered (and its unsettled effects re-driven), and only then is the
//! process ready.

use crate::backend::{self, Backend};
use crate::cli::UpArgs;
use crate::commands::pools::{start_provisioner, ProvisionerOptions};
use crate::config::{resolve_up, BackendChoice, UpSettings};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_gateway::GatewayState;
use flotilla_host::{AggregateRegistry, CommandService, HostConfig, HostDeps, HostMetrics};
use flotilla_messages::Actor;
use flotilla_solver::Study;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Runs `flotilla up`.
pub fn run(args: UpArgs) -> Result<ExitCode> {
    let settings = resolve_up(&args)?;
    actix_rt::System::new().block_on(serve(settings, &args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: UpSettings, args: &UpArgs) -> Result<()> {
    let backend = backend::open(&settings.backend, &settings.subjects, settings.replicas).await?;
    let registry = prometheus::Registry::new();
    let metrics = HostMetrics::register(&registry)?;
    let deps = HostDeps {
        log: backend.log.clone(),
        bus: backend.bus.clone(),
        config: Arc::new(HostConfig {
            subjects: settings.subjects.clone(),
            snapshot_every: settings.snapshot_every,
            idempotency_window: settings.idempotency_window,
            ..HostConfig::default()
        }),
        metrics,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let gateway = start_gateway(&settings, &backend, &registry, ready.clone())?;
    let (recovered, services) = start_actors(&settings, args, &backend, deps, &registry).await?;
    ready.store(true, Ordering::Release);
    tracing::info!(
        backend = %describe(&settings.backend),
        aggregates = recovered,
        actors = ?settings.only,
        "flotilla is ready"
    );
    crate::commands::wait_for_shutdown().await?;
    tracing::info!("shutting down");
    if let Some(handle) = gateway {
        handle.stop(true).await;
    }
    for task in services {
        task.abort();
        let _ = task.await;
    }
    backend.bus.flush().await.ok();
    Ok(())
}

fn describe(choice: &BackendChoice) -> String {
    match choice {
        BackendChoice::Embedded(dir) => format!("embedded ({})", dir.display()),
        BackendChoice::Nats(url) => format!("nats ({url})"),
    }
}

fn start_gateway(
    settings: &UpSettings,
    backend: &Backend,
    registry: &prometheus::Registry,
    ready: Arc<AtomicBool>,
) -> Result<Option<actix_web::dev::ServerHandle>> {
    let Some(addr) = settings.http else {
        return Ok(None);
    };
    let state = GatewayState {
        bus: backend.bus.clone(),
        log: backend.log.clone(),
        subjects: settings.subjects.clone(),
        ready,
        registry: registry.clone(),
        request_timeout: Duration::from_secs(30),
    };
    let server = flotilla_gateway::start(state, addr)
        .with_context(|| format!("http: cannot listen on {addr}"))?;
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Some(handle))
}

/// Subscribes every selected actor, then recovers their aggregates.
/// Returns how many aggregates were recovered and the serving tasks.
async fn start_actors(
    settings: &UpSettings,
    args: &UpArgs,
    backend: &Backend,
    deps: HostDeps,
    prometheus: &prometheus::Registry,
) -> Result<(usize, Vec<JoinHandle<()>>)> {
    let mut recovered = 0;
    let mut services = Vec::new();
    for actor in &settings.only {
        match actor {
            Actor::Solver => {
                let registry = AggregateRegistry::<Study>::new(deps.clone(), None);
                services.extend(
                    CommandService::new(
                        registry.clone(),
                        backend.bus.clone(),
                        settings.subjects.clone(),
                    )
                    .start()
                    .await
                    .context("cannot subscribe the solver's subjects")?,
                );
                recovered += registry.recover_all().await.map_err(|r| {
                    anyhow!("recovery of the solver failed: {r}; run `flotilla audit`")
                })?;
            }
            Actor::Scheduler => {
                let jobs = crate::commands::scheduler::jobs_dir(&settings.backend);
                let (queues, tasks) = crate::commands::scheduler::start(
                    deps.clone(),
                    backend.bus.clone(),
                    &settings.subjects,
                    jobs,
                    prometheus,
                )
                .await?;
                recovered += queues;
                services.extend(tasks);
            }
            Actor::Provisioner => {
                let options = ProvisionerOptions {
                    pools: args.pools.as_deref(),
                    tick: &args.tick,
                    subjects: &settings.subjects,
                    registry: prometheus,
                };
                let (pools, tasks) = start_provisioner(options, backend, deps.clone()).await?;
                recovered += pools;
                services.extend(tasks);
            }
            other => {
                bail!(
                    "only: the {other} actor is not part of this build yet \
                     (available: solver, scheduler, provisioner)"
                )
            }
        }
    }
    Ok((recovered, services))
}
