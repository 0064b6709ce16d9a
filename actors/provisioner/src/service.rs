//! The provisioner's host side: what it observes and when it ticks.
//!
//! The pool aggregate never reads a clock or a socket; this service does,
//! and turns what it sees into commands:
//!
//! - `<prefix>.health.>`: an agent's first heartbeat registers its node
//!   (`register_node`), every heartbeat is remembered (when each agent was
//!   last heard, GPU telemetry for metrics and the utilisation signal),
//!   every `report` becomes `report_health`;
//! - `<prefix>.signal.queue.<queue>`: the scheduler's pending/running job
//!   counts per queue ([`QueueSignal`]); a pool's demand for the queue
//!   autoscaler is the sum over the queues whose `pool` names it;
//! - every `tick_every`, each pool gets a `tick` with the clock, the recent
//!   demand samples and the heartbeat times of the agents it watches, then
//!   its state is read back for the metrics and the node → pool index.
//!
//! After a restart the service has heard nobody yet; agents of nodes they
//! registered themselves are counted as heard at the service's start, so a
//! restart gives every agent a full `heartbeat_timeout` to show up again
//! rather than declaring the fleet dead (or never noticing a dead agent).

use super::metrics::{FleetMetrics, PoolFigures};
use super::Pool;
use flotilla_bus::{Bus, BusError};
use flotilla_host::{AggregateRegistry, Clock};
use flotilla_messages::fleet::PoolConfig;
use flotilla_messages::health::HealthMessage;
use flotilla_messages::provisioner::{ProvisionerCommand, SignalSample};
use flotilla_messages::scheduler::QueueSignal;
use flotilla_messages::{Encoding, Reply, Subjects};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Demand samples kept per pool (the predictive autoscaler's history).
const SAMPLES_KEPT: usize = 120;

/// Settings of the service.
#[derive(Clone)]
pub struct FleetServiceConfig {
    /// Subject names.
    pub subjects: Subjects,
    /// How often pools tick.
    pub tick_every: Duration,
    /// The clock.
    pub clock: Clock,
}

/// A node as the service last saw it in its pool's state.
#[derive(Debug, Clone)]
struct KnownNode {
    pool: String,
    status: String,
    agent: bool,
}

#[derive(Default)]
struct Observed {
    started_at: u64,
    heard: HashMap<String, u64>,
    nodes: HashMap<String, KnownNode>,
    utilization: HashMap<String, (u64, f64)>,
    queue: HashMap<String, QueueSignal>,
    samples: HashMap<String, VecDeque<SignalSample>>,
    unavailable_logged: HashMap<String, String>,
}

/// Feeds observations to the pools and ticks them.
pub struct FleetService {
    registry: Arc<AggregateRegistry<Pool>>,
    bus: Arc<dyn Bus>,
    metrics: FleetMetrics,
    config: FleetServiceConfig,
    observed: Mutex<Observed>,
}

impl FleetService {
    /// A service over the pools of `registry`.
    pub fn new(
        registry: Arc<AggregateRegistry<Pool>>,
        bus: Arc<dyn Bus>,
        metrics: FleetMetrics,
        config: FleetServiceConfig,
    ) -> Arc<Self> {
        let observed = Observed {
            started_at: (config.clock)(),
            ..Default::default()
        };
        Arc::new(FleetService {
            registry,
            bus,
            metrics,
            config,
            observed: Mutex::new(observed),
        })
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to agents and queue signals and starts ticking. Must run
    /// inside an actix system; abort the returned tasks to stop.
    pub async fn start(self: Arc<Self>) -> Result<Vec<JoinHandle<()>>, BusError> {
        let prefix = self.config.subjects.prefix().to_string();
        let mut health = self.bus.subscribe(&format!("{prefix}.health.>")).await?;
        let mut queue = self
            .bus
            .subscribe(&format!("{prefix}.signal.queue.>"))
            .await?;
        let me = self.clone();
        let health_task = actix::spawn(async move {
            while let Some(msg) = health.next().await {
                me.on_health(&msg.payload).await;
            }
        });
        let me = self.clone();
        let queue_task = actix::spawn(async move {
            while let Some(msg) = queue.next().await {
                me.on_queue(&msg.payload);
            }
        });
        let me = self;
        let tick_task = actix::spawn(async move {
            let mut every = tokio::time::interval(me.config.tick_every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                me.tick_all().await;
            }
        });
        Ok(vec![health_task, queue_task, tick_task])
    }

    /// Creates or updates a pool.
    pub async fn apply(&self, config: &PoolConfig) -> Reply {
        let command = ProvisionerCommand::ApplyPool {
            config: Box::new(config.clone()),
            now: (self.config.clock)(),
        };
        let reply = self
            .registry
            .execute_typed(&config.name, command, None)
            .await;
        self.refresh(&config.name).await;
        reply
    }

    async fn on_health(&self, payload: &[u8]) {
        let Ok(encoding) = Encoding::detect(None, payload) else {
            return;
        };
        let message: HealthMessage = match encoding.decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "not a health message");
                return;
            }
        };
        let now = (self.config.clock)();
        let node_id = message.node_id().to_string();
        let known = {
            let mut o = self.observed();
            o.heard.insert(node_id.clone(), now);
            o.nodes.get(&node_id).cloned()
        };
        let Some(known) = known else {
            tracing::debug!(node = %node_id, "health message from a node in no pool");
            return;
        };
        match &message {
            HealthMessage::Heartbeat { gpus, .. } => {
                let mut util = Vec::new();
                for g in gpus {
                    self.metrics
                        .gpu(&node_id, g.index, g.temperature_c, g.utilization_percent);
                    util.extend(g.utilization_percent);
                }
                if !util.is_empty() {
                    let mean = util.iter().sum::<f64>() / util.len() as f64;
                    self.observed()
                        .utilization
                        .insert(node_id.clone(), (now, mean));
                }
            }
            HealthMessage::Report { xids, .. } => self.metrics.xids(&node_id, xids),
            HealthMessage::HealthSourceUnavailable { source, reason, .. } => {
                let first = self
                    .observed()
                    .unavailable_logged
                    .insert(node_id.clone(), reason.clone())
                    != Some(reason.clone());
                if first {
                    tracing::warn!(node = %node_id, source = %source, reason = %reason, "node cannot read its GPUs");
                }
            }
        }
        let Some(command) = command_for(&message, &known.status, now) else {
            return;
        };
        // Every provisioner process hears every agent (each needs the
        // heartbeats); keying a report by node and time makes the pool
        // count it once however many processes forward it.
        let key = report_key(&message);
        let reply = self.registry.execute_typed(&known.pool, command, key).await;
        if !reply.ok {
            tracing::debug!(node = %known.pool, error = ?reply.error, "health command refused");
        }
    }

    fn on_queue(&self, payload: &[u8]) {
        match serde_json::from_slice::<QueueSignal>(payload) {
            Ok(signal) => {
                self.observed().queue.insert(signal.queue.clone(), signal);
            }
            Err(e) => tracing::debug!(error = %e, "bad queue signal"),
        }
    }

    /// Ticks every pool once, then reads their states back.
    pub async fn tick_all(&self) {
        let ids = match self.registry.ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pools");
                return;
            }
        };
        for pool in ids {
            let now = (self.config.clock)();
            let (samples, heartbeats) = self.observations(&pool, now);
            let tick = ProvisionerCommand::Tick {
                now,
                samples,
                heartbeats,
            };
            let reply = self.registry.execute_typed(&pool, tick, None).await;
            if !reply.ok {
                tracing::warn!(pool = %pool, error = ?reply.error, "tick refused");
            }
            self.refresh(&pool).await;
        }
    }

    /// The demand samples and heartbeat times to tick `pool` with.
    fn observations(&self, pool: &str, now: u64) -> (Vec<SignalSample>, BTreeMap<String, u64>) {
        let mut o = self.observed();
        let members: Vec<(String, KnownNode)> = o
            .nodes
            .iter()
            .filter(|(_, n)| n.pool == pool)
            .map(|(id, n)| (id.clone(), n.clone()))
            .collect();
        let fresh = |at: u64| now.saturating_sub(at) <= 120_000;
        let utils: Vec<f64> = members
            .iter()
            .filter(|(_, n)| matches!(n.status.as_str(), "active" | "degraded"))
            .filter_map(|(id, _)| {
                o.utilization
                    .get(id)
                    .filter(|(at, _)| fresh(*at))
                    .map(|(_, u)| *u)
            })
            .collect();
        let queues: Vec<&QueueSignal> = o
            .queue
            .values()
            .filter(|q| q.pool == pool && fresh(q.at))
            .collect();
        let total = |count: fn(&QueueSignal) -> u64| {
            (!queues.is_empty()).then(|| queues.iter().map(|q| count(q)).sum())
        };
        let sample = SignalSample {
            at: now,
            // A non-finite mean (an agent reporting absurd figures) says
            // nothing about demand, and no command on the wire could carry it.
            utilization: (!utils.is_empty())
                .then(|| utils.iter().sum::<f64>() / utils.len() as f64)
                .filter(|u| u.is_finite()),
            pending: total(|q| q.pending),
            running: total(|q| q.running),
        };
        let started_at = o.started_at;
        let heartbeats = members
            .iter()
            .filter_map(|(id, n)| match o.heard.get(id) {
                Some(at) => Some((id.clone(), *at)),
                None if n.agent => Some((id.clone(), started_at)),
                None => None,
            })
            .collect();
        let history = o.samples.entry(pool.to_string()).or_default();
        history.push_back(sample);
        while history.len() > SAMPLES_KEPT {
            history.pop_front();
        }
        (history.iter().copied().collect(), heartbeats)
    }

    /// Reads `pool`'s state: node index and metrics.
    async fn refresh(&self, pool: &str) {
        let reply = self.registry.query(pool).await;
        let Some(view) = reply.result.filter(|_| reply.ok) else {
            return;
        };
        let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
        let mut o = self.observed();
        o.nodes.retain(|_, n| n.pool != pool);
        for n in &nodes {
            let (Some(id), Some(status)) = (n["node_id"].as_str(), n["status"].as_str()) else {
                continue;
            };
            if matches!(status, "terminated" | "failed") {
                continue;
            }
            o.nodes.insert(
                id.to_string(),
                KnownNode {
                    pool: pool.to_string(),
                    status: status.to_string(),
                    agent: n["agent"].as_bool().unwrap_or(false),
                },
            );
        }
        drop(o);
        self.metrics.pool(pool, figures(&view));
    }
}

/// The command a health message from a node in state `status` becomes, if
/// any: a heartbeat registers a node that is coming up, a report is a
/// `report_health`. (The simulator uses this too.)
pub fn command_for(message: &HealthMessage, status: &str, now: u64) -> Option<ProvisionerCommand> {
    let node_id = message.node_id().to_string();
    match message {
        HealthMessage::Heartbeat { .. } => matches!(status, "provisioning" | "registering")
            .then_some(ProvisionerCommand::RegisterNode { node_id, now }),
        HealthMessage::Report {
            verdict,
            action,
            reasons,
            ..
        } => Some(ProvisionerCommand::ReportHealth {
            node_id,
            now,
            verdict: *verdict,
            action: *action,
            reasons: reasons.clone(),
        }),
        HealthMessage::HealthSourceUnavailable { .. } => None,
    }
}

/// The idempotency key of a report: `rpt-<at>-<node>` (the node hashed
/// when that would be too long for an id).
fn report_key(message: &HealthMessage) -> Option<String> {
    let HealthMessage::Report { node_id, at, .. } = message else {
        return None;
    };
    let key = format!("rpt-{at}-{node_id}");
    if key.len() <= 64 {
        return Some(key);
    }
    let hash = super::sim::fnv1a(node_id.as_bytes(), 0);
    Some(format!("rpt-{at}-{hash:016x}"))
}

fn figures(view: &Value) -> PoolFigures {
    let count = |k: &str| view[k].as_u64().unwrap_or(0);
    let nodes = view["nodes"].as_array().map_or(&[][..], Vec::as_slice);
    PoolFigures {
        total: nodes
            .iter()
            .filter(|n| !matches!(n["status"].as_str(), Some("terminated" | "failed")))
            .count() as u64,
        healthy: count("healthy"),
        unhealthy: count("unhealthy"),
        replacements: count("replacements"),
        breaker_open: view["circuit_breaker"] == "open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_messages::health::{HealthAction, Verdict};

    fn report(node: &str) -> HealthMessage {
        HealthMessage::Report {
            node_id: node.into(),
            at: 1_795_000_000_000,
            verdict: Verdict::Unhealthy,
            action: HealthAction::Replace,
            reasons: vec!["xid_79".into()],
            xids: vec![79],
        }
    }

    #[test]
    fn messages_become_commands_by_node_state() {
        let beat = HealthMessage::Heartbeat {
            node_id: "n".into(),
            at: 5,
            gpus: vec![],
        };
        assert!(matches!(
            command_for(&beat, "registering", 7),
            Some(ProvisionerCommand::RegisterNode { now: 7, .. })
        ));
        assert_eq!(command_for(&beat, "active", 7), None);
        assert!(matches!(
            command_for(&report("n"), "active", 7),
            Some(ProvisionerCommand::ReportHealth { .. })
        ));
    }

    #[test]
    fn report_keys_are_valid_ids_even_for_long_node_names() {
        for node in ["gpu-1", &"x".repeat(64)] {
            let key = report_key(&report(node)).unwrap();
            assert!(flotilla_messages::validate_id("key", &key).is_ok(), "{key}");
        }
        assert_ne!(
            report_key(&report(&"x".repeat(64))),
            report_key(&report(&"y".repeat(64)))
        );
    }
}
