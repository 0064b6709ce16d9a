//! `flotilla agent --node-id N [--nats URL] [--source nvml|sim] [--policy FILE]`:
//! a node's health agent (DaemonSet-ready).
//!
//! Every `--interval` it samples the GPUs, evaluates the health policy and
//! publishes a heartbeat and a report on `<prefix>.health.<node>` (without
//! `--nats`, it prints them as JSON lines). `/healthz`, `/readyz` and
//! `/metrics` are served on `--http`. Without NVML it publishes
//! `health_source_unavailable` once, with the reason, and keeps
//! heartbeating. With `--source sim`, faults come from `--faults FILE` and
//! from JSON messages on `<prefix>.faults.<node>` (e.g.
//! `{"kind": "event", "event": {"kind": "xid", "gpu": 0, "code": 79}}`).

use crate::cli::{AgentArgs, HealthSourceKind};
use actix_web::web;
use anyhow::{anyhow, Context, Result};
use flotilla_bus::{Bus, Message};
use flotilla_gateway::auth::{Access, HttpAuth};
use flotilla_health::HealthAgent;
use flotilla_health::HealthPolicy;
use flotilla_health::NvmlSource;
use flotilla_health::{parse_faults, FaultKind, FaultQueue, HealthSource, SimSource};
use flotilla_messages::auth::Permission;
use flotilla_messages::fleet::parse_millis;
use flotilla_messages::health::HealthMessage;
use flotilla_messages::{validate_id, Subjects};
use flotilla_provisioner::{wall_clock, FleetMetrics};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// GPUs a simulated node has.
const SIM_GPUS: u32 = 8;

/// Runs `flotilla agent`.
pub fn run(args: AgentArgs) -> Result<ExitCode> {
    validate_id("node id", &args.node_id).map_err(|e| anyhow!("node-id: {e}"))?;
    let subjects = Subjects::new(&args.prefix).map_err(|e| anyhow!("prefix: {e}"))?;
    let policy = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("policy {}: cannot read", path.display()))?;
            HealthPolicy::from_yaml(&text).map_err(|e| anyhow!("policy {}: {e}", path.display()))?
        }
        None => HealthPolicy::default(),
    };
    let interval = parse_millis(&args.interval)
        .map_err(|e| anyhow!("interval: {e}"))?
        .max(10);
    let http: Option<SocketAddr> = match args.http.as_str() {
        "off" | "none" => None,
        addr => Some(
            addr.parse()
                .map_err(|_| anyhow!("http: invalid address {addr:?} (HOST:PORT or off)"))?,
        ),
    };
    let faults = FaultQueue::default();
    if let Some(path) = &args.faults {
        anyhow::ensure!(
            args.source == HealthSourceKind::Sim,
            "faults: needs --source sim"
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("faults {}: cannot read", path.display()))?;
        for f in parse_faults(&text).map_err(|e| anyhow!("faults {}: {e}", path.display()))? {
            faults.inject(f);
        }
    }
    let source: Result<Box<dyn HealthSource>, (String, String)> = match args.source {
        HealthSourceKind::Nvml => NvmlSource::open()
            .map(|s| Box::new(s) as Box<dyn HealthSource>)
            .map_err(|e| ("nvml".to_string(), e.to_string())),
        HealthSourceKind::Sim => Ok(Box::new(SimSource::new(SIM_GPUS, faults.clone()))),
    };
    let agent = HealthAgent::new(&args.node_id, source, policy);
    let auth = match http {
        Some(addr) => Some(agent_auth(&args, addr)?),
        None => None,
    };
    let http = http.zip(auth);
    crate::commands::run_system(serve(args, subjects, agent, faults, interval, http))?;
    Ok(ExitCode::SUCCESS)
}

/// Where messages go.
enum Sink {
    Nats(Arc<dyn Bus>),
    Stdout,
}

async fn serve(
    args: AgentArgs,
    subjects: Subjects,
    agent: HealthAgent,
    faults: FaultQueue,
    interval: u64,
    http: Option<(SocketAddr, web::Data<HttpAuth>)>,
) -> Result<()> {
    let clock = wall_clock();
    let registry = prometheus::Registry::new();
    let metrics = FleetMetrics::register(&registry)?;
    let agent = Arc::new(Mutex::new(agent));
    let sink = match &args.nats {
        Some(url) => {
            let target = crate::config::nats_target(url, &args.nats_auth)?;
            let bus = crate::backend::connect_nats(&target).await?;
            Sink::Nats(Arc::new(bus))
        }
        None => Sink::Stdout,
    };
    let server = match http {
        Some((addr, auth)) => Some(start_http(addr, agent.clone(), registry.clone(), auth)?),
        None => None,
    };
    let mut tasks = Vec::new();
    if let (Sink::Nats(bus), HealthSourceKind::Sim) = (&sink, args.source) {
        let mut injected = bus
            .subscribe(&format!("{}.faults.{}", subjects.prefix(), args.node_id))
            .await?;
        let (faults, clock) = (faults.clone(), clock.clone());
        tasks.push(actix_rt::spawn(async move {
            while let Some(msg) = injected.next().await {
                match serde_json::from_slice::<FaultKind>(&msg.payload) {
                    Ok(what) => faults.inject_now(what, clock()),
                    Err(e) => tracing::warn!(error = %e, "bad fault injection"),
                }
            }
        }));
    }
    tracing::info!(node = %args.node_id, interval_ms = interval, "health agent running");
    let subject = subjects.health(&args.node_id);
    let mut every = tokio::time::interval(Duration::from_millis(interval));
    let shutdown = crate::commands::wait_for_shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            stopped = &mut shutdown => {
                stopped?;
                break;
            }
        }
        let messages = agent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(clock());
        for m in &messages {
            record(&metrics, m);
            publish(&sink, &subject, m).await;
        }
    }
    for t in tasks {
        t.abort();
    }
    if let Some(handle) = server {
        handle.stop(true).await;
    }
    if let Sink::Nats(bus) = &sink {
        bus.flush().await.ok();
    }
    Ok(())
}

fn record(metrics: &FleetMetrics, message: &HealthMessage) {
    match message {
        HealthMessage::Heartbeat { node_id, gpus, .. } => {
            for g in gpus {
                metrics.gpu(node_id, g.index, g.temperature_c, g.utilization_percent);
            }
        }
        HealthMessage::Report { node_id, xids, .. } => metrics.xids(node_id, xids),
        HealthMessage::HealthSourceUnavailable { .. } => {}
    }
}

async fn publish(sink: &Sink, subject: &str, message: &HealthMessage) {
    let Ok(body) = serde_json::to_vec(message) else {
        return;
    };
    match sink {
        Sink::Stdout => println!("{}", String::from_utf8_lossy(&body)),
        Sink::Nats(bus) => {
            let msg = Message::new(subject.to_string(), body)
                .with_header("Content-Type", "application/json");
            if let Err(e) = bus.publish(msg).await {
                tracing::warn!(error = %e, "health message not published");
            }
        }
    }
}

/// What the agent's routes need: `agent_read` for anything but the
/// probes and `/metrics` (which [`flotilla_gateway::auth`] decides).
fn agent_access(_: &actix_web::http::Method, _: &str) -> Access {
    Access::Needs(Permission::AgentRead)
}

/// The agent's HTTP auth (its refusals use the gateway's reply shape; no
/// rate limits: it serves probes and scrapes), checked before it listens.
fn agent_auth(args: &AgentArgs, addr: SocketAddr) -> Result<web::Data<HttpAuth>> {
    let file = crate::config::FileConfig::load(args.config.as_deref())?;
    let settings = crate::config::resolve_http_auth(&args.auth, &file)?;
    let server = crate::http_auth::Server {
        what: "agent http",
        access: agent_access,
        render: flotilla_gateway::render_refusal,
        rate_limited: false,
    };
    crate::http_auth::build(&settings, server, addr)
}

fn start_http(
    addr: SocketAddr,
    agent: Arc<Mutex<HealthAgent>>,
    registry: prometheus::Registry,
    auth: web::Data<HttpAuth>,
) -> Result<actix_web::dev::ServerHandle> {
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, HttpServer};
    let server = HttpServer::new(move || {
        let (agent, registry) = (agent.clone(), registry.clone());
        App::new()
            .app_data(auth.clone())
            .wrap(from_fn(flotilla_gateway::auth::authenticate))
            .route(
                "/healthz",
                web::get().to(move || {
                    let status = agent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .status()
                        .clone();
                    async move { HttpResponse::Ok().json(status) }
                }),
            )
            .route(
                "/readyz",
                web::get().to(|| async { HttpResponse::Ok().body("ready") }),
            )
            .route(
                "/metrics",
                web::get().to(move || {
                    let mut out = String::new();
                    let encoded =
                        prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
                    async move {
                        match encoded {
                            Ok(()) => HttpResponse::Ok()
                                .content_type("text/plain; version=0.0.4")
                                .body(out),
                            Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
                        }
                    }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .with_context(|| format!("http: cannot listen on {addr}"))?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}
