//! `flotilla worker`: serves a driving policy, CarlaRL-compatible, over HTTP
//! and (with `--nats`) in the `flotilla-inference` queue group.
//!
//! Start-up follows CarlaRL: the HTTP server answers at once (`/healthz`
//! `degraded`, `/readyz` 503), then the version named by `MODEL_VERSION` —
//! else the newest stable `vX.Y.Z` — is loaded, verified, warmed and
//! activated through the worker's `ModelDeployment` aggregate (so the log
//! records it). A version that fails to load leaves the worker running
//! degraded: `/predict` and `/metadata` answer 503 until a good version is
//! activated with `POST /versions/{v}/activate`.
//!
//! The deployment's events go to the embedded log (`--data-dir`, else a
//! temporary one) or, with `--nats`, to the JetStream log, where operators
//! can also send `load_version` / `activate_version` / `roll_back` on
//! `<prefix>.cmd.inference.<worker-id>`.

use crate::backend::{self, Backend};
use crate::cli::WorkerArgs;
use crate::config::BackendChoice;
use actix_web::web;
use anyhow::{Context, Result};
use flotilla_gateway::auth::HttpAuth;
use flotilla_gateway::inference::{HttpSettings, InferenceHttp};
use flotilla_host::{
    AggregateRegistry, CommandService, EffectHandler, HostConfig, HostDeps, HostMetrics,
};
use flotilla_inference::serve_predictions;
use flotilla_inference::{
    ArtifactStore, BatchConfig, DeploymentEffects, EngineConfig, InferenceEngine, InferenceMetrics,
    ModelDeployment, VersionControl,
};
use flotilla_messages::{validate_id, Subjects};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Runs `flotilla worker` until SIGINT or SIGTERM.
pub fn run(args: WorkerArgs) -> Result<ExitCode> {
    single_threaded_matmuls();
    let auth = worker_auth(&args)?;
    crate::commands::run_system(serve(args, auth))?;
    Ok(ExitCode::SUCCESS)
}

/// candle's CPU matmuls use a rayon pool sized by `RAYON_NUM_THREADS`; for
/// a small MLP the pool costs ~30x the arithmetic, so the worker runs them
/// single-threaded (unless the operator says otherwise) and gets its
/// parallelism from concurrent batches. Called before any thread starts.
pub fn single_threaded_matmuls() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

/// The HTTP address: `--http`, else 127.0.0.1 on `--port`.
fn http_addr(args: &WorkerArgs) -> SocketAddr {
    args.http
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port)))
}

/// The worker's HTTP auth, checked before anything listens.
fn worker_auth(args: &WorkerArgs) -> Result<web::Data<HttpAuth>> {
    let file = crate::config::FileConfig::load(args.config.as_deref())?;
    let settings = crate::config::resolve_http_auth(&args.auth, &file)?;
    let server = crate::http_auth::Server {
        what: "worker http",
        access: flotilla_gateway::inference::access,
        render: flotilla_gateway::inference::render_refusal,
        rate_limited: true,
    };
    crate::http_auth::build(&settings, server, http_addr(args))
}

async fn serve(args: WorkerArgs, auth: web::Data<HttpAuth>) -> Result<()> {
    let subjects = Subjects::new(&args.prefix).context("prefix")?;
    let temp = tempfile_dir(&args)?;
    let choice = match (&args.nats, &args.data_dir) {
        (Some(url), _) => {
            BackendChoice::Nats(Box::new(crate::config::nats_target(url, &args.nats_auth)?))
        }
        (None, Some(dir)) => BackendChoice::Embedded(dir.clone()),
        (None, None) => BackendChoice::Embedded(temp.clone().unwrap_or_default()),
    };
    let mut backend = backend::open(&choice, &subjects, 1).await?;
    let file = crate::config::FileConfig::load(args.config.as_deref())?;
    let control_plane = match &args.control_plane_key {
        Some(path) => crate::signing::reader_keys(&choice, Some(path))?,
        None => flotilla_bus::LogKeys::default(),
    };
    backend.trust = crate::trust::command_trust(
        &choice,
        args.trust
            .principals
            .as_deref()
            .or(file.principals_file.as_deref()),
        args.trust.unsigned_commands.or(file.unsigned_commands),
        control_plane.verifying(),
    )?;
    if args.nats.is_some() {
        crate::trust::warn_if_unsigned(&backend.trust);
    }
    let registry = prometheus::Registry::new();
    let store = ArtifactStore::new(&args.artifacts);
    let engine = InferenceEngine::new(
        store.clone(),
        engine_config(&args),
        InferenceMetrics::register(&registry)?,
    );
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    validate_id("worker-id", &worker_id)?;
    let deployments = deployment(&backend, &registry, &subjects, &engine)?;
    let mut tasks = Vec::new();
    if args.nats.is_some() {
        tasks.extend(
            CommandService::for_one(
                deployments.clone(),
                backend.bus.clone(),
                subjects.clone(),
                backend.trust.clone(),
                flotilla_messages::StreamName::new(
                    flotilla_messages::Actor::Inference,
                    &worker_id,
                )?,
            )
            .start()
            .await
            .context("cannot subscribe the inference commands")?,
        );
    }
    let control = VersionControl::new(deployments, &worker_id, engine.clone());
    let http = start_http(&args, &engine, &control, &registry, auth)?;
    let chosen = store.choose(args.model_version.as_deref());
    if args.nats.is_some() {
        let model = model_name(&args, &store, chosen.as_ref().ok())?;
        let subject = subjects.infer(&model);
        tasks.push(serve_predictions(backend.bus.clone(), &subject, engine.clone()).await?);
    }
    match chosen.map_err(|e| e.to_serving()) {
        Ok(version) => match control
            .activate(&version, flotilla_messages::auth::CONTROL_PLANE)
            .await
        {
            Ok(_) => tracing::info!(%version, worker = %worker_id, "worker is ready"),
            Err(e) => tracing::error!(%version, error = %e, "model not loaded: serving degraded"),
        },
        Err(e) => tracing::error!(error = %e, "no model to load: serving degraded"),
    }
    crate::commands::wait_for_shutdown().await?;
    tracing::info!("shutting down");
    http.stop(true).await;
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    backend.bus.flush().await.ok();
    if let Some(dir) = temp {
        std::fs::remove_dir_all(dir).ok();
    }
    Ok(())
}

fn engine_config(args: &WorkerArgs) -> EngineConfig {
    EngineConfig {
        batch: BatchConfig {
            max_batch_size: args.max_batch_size.max(1),
            max_queue_delay: Duration::from_micros(args.max_queue_delay_us),
            queue_capacity: args.queue_capacity.max(1),
            threads: args.inference_threads.max(1),
        },
        seed: args.seed,
        use_gpu: args.use_gpu,
        pinned_version: args.model_version.clone().filter(|v| !v.is_empty()),
    }
}

/// A fresh directory for the embedded log when none is given.
fn tempfile_dir(args: &WorkerArgs) -> Result<Option<PathBuf>> {
    if args.nats.is_some() || args.data_dir.is_some() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("flotilla-worker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(Some(dir))
}

fn default_worker_id() -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("worker-{}-{started}", std::process::id())
}

/// The registry of the worker's deployment aggregate, its effects wired to the engine.
fn deployment(
    backend: &Backend,
    registry: &prometheus::Registry,
    subjects: &Subjects,
    engine: &Arc<InferenceEngine>,
) -> Result<Arc<AggregateRegistry<ModelDeployment>>> {
    let deps = HostDeps {
        log: backend.log.clone(),
        bus: backend.bus.clone(),
        config: Arc::new(HostConfig {
            subjects: subjects.clone(),
            ..HostConfig::default()
        }),
        metrics: HostMetrics::register(registry)?,
    };
    let effects: Arc<dyn EffectHandler<ModelDeployment>> = Arc::new(DeploymentEffects {
        engine: engine.clone(),
    });
    Ok(AggregateRegistry::new(deps, Some(effects)))
}

fn start_http(
    args: &WorkerArgs,
    engine: &Arc<InferenceEngine>,
    control: &VersionControl,
    registry: &prometheus::Registry,
    auth: web::Data<HttpAuth>,
) -> Result<actix_web::dev::ServerHandle> {
    let addr = http_addr(args);
    let state = InferenceHttp {
        auth,
        engine: engine.clone(),
        control: control.clone(),
        registry: registry.clone(),
        settings: Arc::new(HttpSettings {
            cors_origins: trimmed(&args.cors_origins),
            allowed_hosts: trimmed(&args.allowed_hosts),
            max_body_bytes: args.max_body_bytes,
            workers: args
                .workers
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1)
                .max(1),
            git: option_env!("FLOTILLA_GIT_SHA")
                .unwrap_or("unknown")
                .to_string(),
        }),
    };
    let server = flotilla_gateway::inference::start(state, addr)
        .with_context(|| format!("http: cannot listen on {addr}"))?;
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// The non-empty, trimmed items of a comma list.
pub(crate) fn trimmed(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The subject token: `--model`, else the chosen card's `model_name`.
fn model_name(args: &WorkerArgs, store: &ArtifactStore, chosen: Option<&String>) -> Result<String> {
    let from_card = || {
        store
            .versions()
            .into_iter()
            .find(|e| Some(&e.version) == chosen)
            .and_then(|e| e.card.ok())
            .map(|c| c.model_name)
    };
    let name = args.model.clone().or_else(from_card).ok_or_else(|| {
        anyhow::anyhow!("model: no readable model card names the model; pass --model NAME")
    })?;
    validate_id("model", &name)?;
    Ok(name)
}
