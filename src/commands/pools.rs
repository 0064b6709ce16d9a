//! `flotilla pools validate FILE`, and the provisioner's start-up inside
//! `flotilla up` (`--only provisioner --pools FILE`).
//!
//! A pools file holds `pools:` (the seed's list with `name:` or Navarch's
//! map by name, either spelling of the fields) and optional `providers:`
//! (sim, exec, kubernetes); see `flotilla_messages::fleet`.

use crate::backend::Backend;
use crate::cli::{PoolsArgs, PoolsWhat};
use anyhow::{anyhow, Context, Result};
use flotilla_host::{AggregateRegistry, CommandService, EffectHandler, HostDeps};
use flotilla_messages::fleet::{parse_millis, AutoscalerConfig, PoolsFile};
use flotilla_messages::Subjects;
use flotilla_provisioner::{
    wall_clock, FleetMetrics, FleetService, FleetServiceConfig, Pool, ProviderEffects, ProviderSet,
};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Runs `flotilla pools ...`.
pub fn run(args: PoolsArgs) -> Result<ExitCode> {
    match args.what {
        PoolsWhat::Validate { file } => {
            let pools = load(&file)?;
            ProviderSet::from_config(&pools.providers)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            println!("{}: ok, {} pool(s)", file.display(), pools.pools.len());
            for p in &pools.pools {
                let autoscaler = p.autoscaling.as_ref().map_or("none", autoscaler_name);
                println!(
                    "  {}: provider {}, {}..={} nodes, cooldown {}s, autoscaler {}, unhealthy after {}, auto_replace {}",
                    p.name,
                    p.provider,
                    p.min_nodes,
                    p.max_nodes,
                    p.cooldown.0,
                    autoscaler,
                    p.health.unhealthy_threshold,
                    p.health.auto_replace
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn autoscaler_name(a: &AutoscalerConfig) -> &'static str {
    match a {
        AutoscalerConfig::Reactive { .. } => "reactive",
        AutoscalerConfig::Queue { .. } => "queue",
        AutoscalerConfig::Scheduled { .. } => "scheduled",
        AutoscalerConfig::Predictive { .. } => "predictive",
        AutoscalerConfig::Composite { .. } => "composite",
    }
}

/// Reads and validates a pools file; errors name the file and the field.
pub fn load(path: &Path) -> Result<PoolsFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    PoolsFile::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// What `up` needs to run the provisioner.
pub struct ProvisionerOptions<'a> {
    /// The pools file, if any (pools in the log run anyway).
    pub pools: Option<&'a Path>,
    /// Tick interval, e.g. `1s`.
    pub tick: &'a str,
    /// Subject names.
    pub subjects: &'a Subjects,
    /// Where the fleet metrics go.
    pub registry: &'a prometheus::Registry,
}

/// Starts the provisioner: command service, recovery (re-driving
/// unfinished provider calls), the pools of the file, and the fleet
/// service. Returns how many pools were recovered and the serving tasks.
pub async fn start_provisioner(
    options: ProvisionerOptions<'_>,
    backend: &Backend,
    deps: HostDeps,
) -> Result<(usize, Vec<JoinHandle<()>>)> {
    let file = options.pools.map(load).transpose()?.unwrap_or_default();
    let providers = ProviderSet::from_config(&file.providers).map_err(|e| anyhow!("pools: {e}"))?;
    let tick = parse_millis(options.tick).map_err(|e| anyhow!("tick: {e}"))?;
    let clock = wall_clock();
    let effects: Arc<dyn EffectHandler<Pool>> =
        Arc::new(ProviderEffects::new(providers, clock.clone()));
    let registry = AggregateRegistry::<Pool>::new(deps, Some(effects));
    let mut tasks = CommandService::new(
        registry.clone(),
        backend.bus.clone(),
        options.subjects.clone(),
        backend.trust.clone(),
    )
    .start()
    .await
    .context("cannot subscribe the provisioner's subjects")?;
    let recovered = registry
        .recover_all()
        .await
        .map_err(|r| anyhow!("recovery of the provisioner failed: {r}; run `flotilla audit`"))?;
    let metrics = FleetMetrics::register(options.registry)?;
    let service = FleetService::new(
        registry,
        backend.bus.clone(),
        metrics,
        FleetServiceConfig {
            subjects: options.subjects.clone(),
            tick_every: Duration::from_millis(tick.max(1)),
            clock,
        },
    );
    for pool in &file.pools {
        let reply = apply_when_available(&service, pool).await;
        if let Some(e) = reply.error {
            anyhow::bail!("pools: pool {}: {}: {}", pool.name, e.code, e.message);
        }
        tracing::info!(pool = %pool.name, events = reply.events.map_or(0, |e| e.len()), "pool applied");
    }
    tasks.extend(
        service
            .start()
            .await
            .context("cannot subscribe the fleet's subjects")?,
    );
    Ok((recovered, tasks))
}

/// How long `up` keeps applying a pool whose log does not answer yet.
const POOL_LOG_PATIENCE: Duration = Duration::from_secs(90);

/// Applies a pool, retrying while its log is unavailable: right after a
/// NATS cluster forms, JetStream can answer 503 (no stream leader yet) for
/// a while, and a control plane started beside it must wait that out, not
/// exit. Any other refusal fails at once.
async fn apply_when_available(
    service: &FleetService,
    pool: &flotilla_messages::fleet::PoolConfig,
) -> flotilla_messages::Reply {
    let deadline = tokio::time::Instant::now() + POOL_LOG_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        let reply = service.apply(pool).await;
        let unavailable = reply
            .error
            .as_ref()
            .filter(|e| e.code == flotilla_messages::ErrorCode::Unavailable.as_str());
        let Some(e) = unavailable else {
            return reply;
        };
        if tokio::time::Instant::now() + pause > deadline {
            return reply;
        }
        tracing::warn!(pool = %pool.name, error = %e.message, retry_in_ms = pause.as_millis() as u64,
            "the pool's log is not available yet; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
