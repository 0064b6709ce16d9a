//! `flotilla up`: runs the actors and the gateway until SIGINT or SIGTERM.
//!
//! Start-up order matters for readiness: the actors subscribe first (so no
//! command is lost while recovering — it waits in its aggregate's mailbox),
//! the gateway answers `/readyz` with 503, every aggregate in the log is
//! recovered (and its unsettled effects re-driven), and only then is the
//! process ready. A NATS backend that cannot be opened at start is tried
//! again with a growing pause; `up` does not exit because of it.

use crate::backend::{self, Backend};
use crate::cli::UpArgs;
use crate::commands::leadership::Leadership;
use crate::commands::pools::{start_provisioner, ProvisionerOptions};
use crate::commands::worker::trimmed;
use crate::config::{resolve_up, BackendChoice, UpSettings};
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_bus::CorruptStreams;
use flotilla_gateway::auth::HttpAuth;
use flotilla_gateway::guard::RequestPolicy;
use flotilla_gateway::GatewayState;
use flotilla_host::{AggregateRegistry, CommandService, HostConfig, HostDeps, HostMetrics};
use flotilla_messages::Actor;
use flotilla_solver::Study;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The first pause before opening a NATS backend again.
const FIRST_OPEN_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between two attempts to open a NATS backend.
const MAX_OPEN_RETRY: Duration = Duration::from_secs(15);

/// Threads each actor kind spreads its aggregates over: more than this
/// machine's cores would need, so that a long command on one thread leaves
/// the others' aggregates answering while the OS shares the cores.
const ARBITERS_PER_ACTOR: usize = 4;

/// Runs `flotilla up`.
pub fn run(args: UpArgs) -> Result<ExitCode> {
    let settings = resolve_up(&args)?;
    // Before anything listens: a bind beyond loopback without tokens stops here.
    let auth = match settings.http {
        Some(addr) => Some(crate::http_auth::build(
            &settings.auth,
            gateway_server(),
            addr,
        )?),
        None => None,
    };
    crate::commands::run_system(serve(settings, &args, auth))?;
    Ok(ExitCode::SUCCESS)
}

/// The gateway's route table and error shape, rate limited.
fn gateway_server() -> crate::http_auth::Server {
    crate::http_auth::Server {
        what: "http",
        access: flotilla_gateway::access,
        render: flotilla_gateway::render_refusal,
        rate_limited: true,
    }
}

async fn serve(
    settings: UpSettings,
    args: &UpArgs,
    auth: Option<web::Data<HttpAuth>>,
) -> Result<()> {
    let waiting = start_waiting_gateway(&settings)?;
    let opened = open_backend(&settings).await;
    if let Some(handle) = waiting {
        handle.stop(false).await;
    }
    let Some(backend) = opened? else {
        return Ok(());
    };
    let registry = prometheus::Registry::new();
    let metrics = HostMetrics::register(&registry)?;
    let deps = HostDeps {
        log: backend.log.clone(),
        bus: backend.bus.clone(),
        config: Arc::new(HostConfig {
            subjects: settings.subjects.clone(),
            snapshot_every: settings.snapshot_every,
            idempotency_window: settings.idempotency_window,
            passivate_after: settings.passivate_after,
            max_event_bytes: settings.max_event_bytes,
            max_batch_bytes: settings.max_batch_bytes,
            arbiters: ARBITERS_PER_ACTOR,
            ..HostConfig::default()
        }),
        metrics,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let corrupt = deps.metrics.corrupt_streams.clone();
    let gateway = match (settings.http, auth) {
        (Some(addr), Some(auth)) => {
            let sources = GatewaySources {
                backend: &backend,
                registry: &registry,
                ready: ready.clone(),
                corrupt,
                auth,
            };
            Some(start_gateway(&settings, args, addr, sources)?)
        }
        _ => None,
    };
    let Started {
        recovered,
        services,
        leadership,
    } = start_actors(&settings, args, &backend, deps, &registry).await?;
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
    if let Some(claim) = leadership {
        claim.release().await;
    }
    backend.bus.flush().await.ok();
    Ok(())
}

/// Opens the backend. A NATS backend that cannot be opened yet (the server
/// down or restarting, JetStream not ready) is tried again with a growing
/// pause until it opens, so `up` outlives a misbehaving NATS; `None` when a
/// shutdown signal comes first.
async fn open_backend(settings: &UpSettings) -> Result<Option<Backend>> {
    // Outside the retries: a bad key file is an error, not NATS being slow.
    let keys = crate::signing::writer_keys(&settings.backend, settings.signing_key.as_deref())?;
    let trust = crate::trust::command_trust(
        &settings.backend,
        settings.principals.as_deref(),
        settings.unsigned_commands,
        keys.verifying(),
    )?;
    crate::trust::require_signing_key(&settings.backend, &keys)?;
    crate::trust::warn_if_unsigned(&trust);
    let mut pause = FIRST_OPEN_RETRY;
    loop {
        let (choice, subjects) = (&settings.backend, &settings.subjects);
        let opened =
            backend::open_with_keys(choice, subjects, settings.replicas, keys.clone()).await;
        let error = match opened {
            Ok(backend) => {
                let trust = trust.clone();
                return Ok(Some(Backend { trust, ..backend }));
            }
            // A bad setting or a refused credential stays so: stop.
            Err(e)
                if matches!(settings.backend, BackendChoice::Nats(_))
                    && !backend::is_permanent(&e) =>
            {
                e
            }
            Err(e) => return Err(e),
        };
        tracing::warn!(error = %format!("{error:#}"), retry_in = ?pause, "NATS not usable yet, trying again");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            signal = crate::commands::wait_for_shutdown() => {
                signal?;
                return Ok(None);
            }
        }
        pause = (pause * 2).min(MAX_OPEN_RETRY);
    }
}

/// While a NATS backend is being opened, the gateway's address answers 503
/// `UNAVAILABLE` (so `/readyz` says not ready) instead of refusing
/// connections; `/healthz` answers 200, since the process is alive and
/// retrying, and a liveness probe must not restart it for NATS's sake.
fn start_waiting_gateway(settings: &UpSettings) -> Result<Option<ServerHandle>> {
    let (Some(addr), BackendChoice::Nats(_)) = (settings.http, &settings.backend) else {
        return Ok(None);
    };
    let server = HttpServer::new(|| {
        App::new()
            .route("/healthz", web::get().to(alive_waiting_for_nats))
            .default_service(web::to(waiting_for_nats))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(0)
    .bind(addr)
    .with_context(|| format!("http: cannot listen on {addr}"))?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Some(handle))
}

async fn alive_waiting_for_nats() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "waiting_for_nats"}))
}

async fn waiting_for_nats() -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "status": "waiting_for_nats",
        "error": {"code": "UNAVAILABLE", "message": "NATS is not usable yet; flotilla keeps trying"},
    }))
}

fn describe(choice: &BackendChoice) -> String {
    match choice {
        BackendChoice::Embedded(dir) => format!("embedded ({})", dir.display()),
        BackendChoice::Nats(target) => {
            format!("nats ({})", flotilla_bus::nats::redacted(&target.url))
        }
    }
}

/// What the gateway serves from.
struct GatewaySources<'a> {
    backend: &'a Backend,
    registry: &'a prometheus::Registry,
    ready: Arc<AtomicBool>,
    corrupt: CorruptStreams,
    auth: web::Data<HttpAuth>,
}

fn start_gateway(
    settings: &UpSettings,
    args: &UpArgs,
    addr: std::net::SocketAddr,
    sources: GatewaySources<'_>,
) -> Result<ServerHandle> {
    let state = GatewayState {
        bus: sources.backend.bus.clone(),
        log: sources.backend.log.clone(),
        subjects: settings.subjects.clone(),
        ready: sources.ready,
        corrupt: sources.corrupt,
        registry: sources.registry.clone(),
        auth: sources.auth,
        signer: sources.backend.command_signer.clone(),
        replay: Arc::new(crate::commands::replay::LogReplay(
            sources.backend.log.clone(),
        )),
        inference_workers: inference_workers(&args.inference_workers)?,
        request_timeout: Duration::from_secs(30),
        policy: RequestPolicy::for_bind(
            addr,
            trimmed(&args.allowed_hosts),
            trimmed(&args.allowed_origins),
        ),
    };
    let server = flotilla_gateway::start(state, addr)
        .with_context(|| format!("http: cannot listen on {addr}"))?;
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// The `--inference-worker` URLs, checked: each an `http://` or
/// `https://` URL with a host.
fn inference_workers(urls: &[String]) -> Result<Vec<String>> {
    trimmed(urls)
        .into_iter()
        .map(|url| {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            match rest {
                Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url),
                _ => {
                    bail!("inference-worker: {url:?} is not an http:// or https:// URL with a host")
                }
            }
        })
        .collect()
}

/// What [`start_actors`] started.
struct Started {
    /// How many aggregates were recovered.
    recovered: usize,
    /// The serving tasks.
    services: Vec<JoinHandle<()>>,
    /// The claim on the control-plane lease, when leased parts are hosted here.
    leadership: Option<Leadership>,
}

/// Subscribes every selected actor, then recovers their aggregates.
async fn start_actors(
    settings: &UpSettings,
    args: &UpArgs,
    backend: &Backend,
    deps: HostDeps,
    prometheus: &prometheus::Registry,
) -> Result<Started> {
    let mut recovered = 0;
    let mut services = Vec::new();
    // Started last, under the lease: one replica at a time runs them.
    let mut leased = Vec::new();
    for actor in &settings.only {
        match actor {
            Actor::Solver => {
                let registry = AggregateRegistry::<Study>::new(deps.clone(), None);
                services.extend(
                    CommandService::new(
                        registry.clone(),
                        backend.bus.clone(),
                        settings.subjects.clone(),
                        backend.trust.clone(),
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
                let part = crate::commands::scheduler::SchedulerPart {
                    deps: deps.clone(),
                    bus: backend.bus.clone(),
                    subjects: settings.subjects.clone(),
                    jobs: crate::commands::scheduler::jobs_dir(&settings.backend),
                    allowed: settings.allowed_commands.clone(),
                    trust: backend.trust.clone(),
                };
                leased.push(crate::commands::scheduler::part(part, prometheus)?);
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
            Actor::StudyRun => leased.push(crate::commands::study_runs::part(
                deps.clone(),
                backend,
                &settings.subjects,
                prometheus,
            )?),
            other => {
                bail!(
                    "only: the {other} actor is not part of `flotilla up` \
                     (available: solver, scheduler, provisioner, study_run)"
                )
            }
        }
    }
    let mut leadership = None;
    if !leased.is_empty() {
        let replica = crate::commands::leadership::replica_id(settings.http);
        let (n, tasks, claim) = Leadership::start(backend.leases.clone(), replica, leased).await?;
        recovered += n;
        services.extend(tasks);
        leadership = Some(claim);
    }
    Ok(Started {
        recovered,
        services,
        leadership,
    })
}
