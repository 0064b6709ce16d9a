//! The provisioner's commands and events: one aggregate per node pool,
//! `provisioner/<pool>`.
//!
//! Time only enters through a command's `now` (unix milliseconds); every
//! event records the `at` it was decided at. Observations the host makes
//! (autoscaler signals, when each agent was last heard) arrive in `tick`, so
//! the aggregate stays a pure function of its events and commands.
//!
//! Effects: `node_requested` (provision), `node_cordoned` (cordon),
//! `node_drain_started` (drain) and `node_termination_requested`
//! (terminate) ask the pool's provider to act; the outcome comes back as
//! `node_provisioned` / `node_provision_failed` / `node_drained` /
//! `node_terminated` / `provider_call_failed`, with the id `fx-<event id>`.
//!
//! Neighbours: [`crate::fleet`] (the pool configuration), [`crate::health`]
//! (what agents publish), and the pool aggregate in `flotilla-provisioner`.

use crate::fleet::{DrainMode, PoolConfig};
use crate::health::{HealthAction, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The command types of the provisioner.
pub const COMMAND_TYPES: &[&str] = &[
    "apply_pool",
    "tick",
    "register_node",
    "report_health",
    "node_provisioned",
    "node_provision_failed",
    "node_drained",
    "node_terminated",
    "provider_call_failed",
    "reset_circuit_breaker",
    "resize",
    "cordon_node",
    "uncordon_node",
    "drain_node",
];

/// One observation of a pool's demand, for the autoscalers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignalSample {
    /// When it was observed, unix milliseconds.
    pub at: u64,
    /// Mean GPU utilisation of the pool's active nodes, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
    /// Jobs waiting for this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Jobs running on this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u64>,
}

/// What a client or the host asks a pool to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProvisionerCommand {
    /// Creates the pool or changes its configuration (a repeat of the same
    /// configuration changes nothing).
    ApplyPool {
        /// The pool, in either spelling.
        config: Box<PoolConfig>,
        /// The sender's clock, unix milliseconds.
        now: u64,
    },
    /// Lets time pass: timeouts, autoscaling, reconciliation.
    Tick {
        /// The sender's clock, unix milliseconds.
        now: u64,
        /// Recent demand observations, oldest first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        samples: Vec<SignalSample>,
        /// When each node's agent was last heard (unix milliseconds).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        heartbeats: BTreeMap<String, u64>,
    },
    /// A node's agent is up (its first heartbeat).
    RegisterNode {
        /// The node.
        node_id: String,
        /// The sender's clock.
        now: u64,
    },
    /// A node's agent evaluated its health.
    ReportHealth {
        /// The node.
        node_id: String,
        /// The sender's clock.
        now: u64,
        /// The agent's verdict.
        verdict: Verdict,
        /// What the agent recommends.
        #[serde(default)]
        action: HealthAction,
        /// Why.
        #[serde(default)]
        reasons: Vec<String>,
    },
    /// Outcome: the provider created the node.
    NodeProvisioned {
        /// The node.
        node_id: String,
        /// The provider's id for it.
        instance_id: String,
        /// Whether it is up already (no agent heartbeat needed).
        #[serde(default)]
        registered: bool,
        /// The effect handler's clock.
        now: u64,
    },
    /// Outcome: the provider could not create the node.
    NodeProvisionFailed {
        /// The node.
        node_id: String,
        /// The provider's error.
        error: String,
        /// The effect handler's clock.
        now: u64,
    },
    /// Outcome: the node has no workloads left.
    NodeDrained {
        /// The node.
        node_id: String,
        /// Whether workloads were evicted rather than finished.
        #[serde(default)]
        forced: bool,
        /// The effect handler's clock.
        now: u64,
    },
    /// Outcome: the node is gone.
    NodeTerminated {
        /// The node.
        node_id: String,
        /// The effect handler's clock.
        now: u64,
    },
    /// Outcome: a cordon, drain or terminate call failed for good.
    ProviderCallFailed {
        /// The node.
        node_id: String,
        /// `cordon`, `drain` or `terminate`.
        operation: String,
        /// The provider's error.
        error: String,
        /// The effect handler's clock.
        now: u64,
    },
    /// Closes an open circuit breaker by hand.
    ResetCircuitBreaker {
        /// The sender's clock.
        now: u64,
    },
    /// Sets the pool's desired size by hand (clamped to min/max).
    Resize {
        /// The new size.
        nodes: u32,
        /// The sender's clock.
        now: u64,
    },
    /// An operator takes a serving node out of scheduling; it stays in the
    /// pool (and counts toward its size) until uncordoned or drained.
    CordonNode {
        /// The node.
        node_id: String,
        /// The sender's clock.
        now: u64,
    },
    /// An operator returns a node they cordoned to service.
    UncordonNode {
        /// The node.
        node_id: String,
        /// The sender's clock.
        now: u64,
    },
    /// An operator retires a node: cordoned, drained, terminated; the pool
    /// requests a node in its place to stay at its size.
    DrainNode {
        /// The node.
        node_id: String,
        /// The sender's clock.
        now: u64,
    },
}

/// What the provider is asked to create: everything it needs, so the
/// effect runs from the event alone (and an audit shows what was asked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The pool.
    pub pool: String,
    /// The provider's name.
    pub provider: String,
    /// The instance type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Labels for the node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Commands to run on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_commands: Vec<String>,
}

impl NodeSpec {
    /// The spec of a node of `pool`.
    pub fn of(pool: &PoolConfig) -> Self {
        NodeSpec {
            pool: pool.name.clone(),
            provider: pool.provider.clone(),
            instance_type: pool.instance_type.clone(),
            region: pool.region.clone(),
            labels: pool.labels.clone(),
            setup_commands: pool.setup_commands.clone(),
        }
    }
}

/// The node a provider call acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTarget {
    /// The provider's name.
    pub provider: String,
    /// The provider's id for the node, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// Why a node was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestReason {
    /// The pool is below its desired size.
    ScaleUp,
    /// It replaces a node taken out.
    Replacement,
}

/// Why a node leaves the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// Hardware faults (the reasons).
    Unhealthy,
    /// The GPU needs a reset; the node may come back.
    GpuReset,
    /// The pool shrinks.
    ScaleDown,
    /// It never registered.
    RegistrationTimeout,
    /// Its provisioning failed.
    ProvisionFailed,
    /// An operator cordoned or drained it.
    Operator,
}

/// What happened to a pool. Each has the `at` it was decided at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProvisionerEvent {
    /// The pool exists with this configuration (created or changed).
    PoolConfigured {
        /// The configuration.
        config: Box<PoolConfig>,
        /// When.
        at: u64,
    },
    /// The desired size changed.
    ScaleDecided {
        /// The size before.
        from: u32,
        /// The size after.
        to: u32,
        /// Who decided (`autoscaler:reactive`, `resize`, `config`).
        reason: String,
        /// When.
        at: u64,
    },
    /// A node is to be created (effect: provision).
    NodeRequested {
        /// The new node's id, `<pool>-<n>`.
        node_id: String,
        /// Why.
        reason: RequestReason,
        /// The node it replaces.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
        /// What to create.
        spec: NodeSpec,
        /// When.
        at: u64,
    },
    /// The provider created the node; it is registering.
    NodeProvisioned {
        /// The node.
        node_id: String,
        /// The provider's id.
        instance_id: String,
        /// When.
        at: u64,
    },
    /// The node's agent is up: the node is active (boot grace starts).
    NodeRegistered {
        /// The node.
        node_id: String,
        /// Whether its agent registered it (so its heartbeats are watched)
        /// rather than the provider.
        #[serde(default)]
        by_agent: bool,
        /// When.
        at: u64,
    },
    /// The node failed to come up.
    NodeFailed {
        /// The node.
        node_id: String,
        /// Why.
        reason: RemovalReason,
        /// Details (the provider's error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When.
        at: u64,
    },
    /// A health report or a missing heartbeat was counted.
    NodeHealthEvaluated {
        /// The node.
        node_id: String,
        /// The verdict.
        verdict: Verdict,
        /// The recommended action.
        #[serde(default)]
        action: HealthAction,
        /// Consecutive unhealthy evaluations so far (0 when not unhealthy).
        consecutive_unhealthy: u32,
        /// Why.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reasons: Vec<String>,
        /// When.
        at: u64,
    },
    /// No new work goes to the node (effect: cordon).
    NodeCordoned {
        /// The node.
        node_id: String,
        /// Why.
        reason: RemovalReason,
        /// Where it runs.
        target: NodeTarget,
        /// When.
        at: u64,
    },
    /// A cordoned node is back in service (it recovered).
    NodeUncordoned {
        /// The node.
        node_id: String,
        /// Where it runs.
        target: NodeTarget,
        /// When.
        at: u64,
    },
    /// Workloads are being moved off (effect: drain).
    NodeDrainStarted {
        /// The node.
        node_id: String,
        /// What happens at the deadline.
        mode: DrainMode,
        /// When the drain times out, unix milliseconds.
        deadline: u64,
        /// Where it runs.
        target: NodeTarget,
        /// When.
        at: u64,
    },
    /// The drain passed its deadline in `wait` mode (reported once).
    NodeDrainOverdue {
        /// The node.
        node_id: String,
        /// When.
        at: u64,
    },
    /// The node has no workloads left.
    NodeDrained {
        /// The node.
        node_id: String,
        /// Whether workloads were evicted.
        forced: bool,
        /// When.
        at: u64,
    },
    /// The node is to be deleted (effect: terminate).
    NodeTerminationRequested {
        /// The node.
        node_id: String,
        /// Where it runs.
        target: NodeTarget,
        /// When.
        at: u64,
    },
    /// The node is gone.
    NodeTerminated {
        /// The node.
        node_id: String,
        /// When.
        at: u64,
    },
    /// A provider call failed for good.
    ProviderCallFailed {
        /// The node.
        node_id: String,
        /// `cordon`, `drain` or `terminate`.
        operation: String,
        /// The error.
        error: String,
        /// When.
        at: u64,
    },
    /// Automatic replacement is stopped: too much of the pool was replaced
    /// within the window.
    CircuitBreakerTripped {
        /// Replacements within the window, counting the one refused.
        replacements: u32,
        /// The pool's desired size.
        pool_size: u32,
        /// `replacements / pool_size` in percent.
        percent: f64,
        /// The configured limit, percent.
        limit_percent: f64,
        /// The window, seconds.
        window_seconds: u64,
        /// The node whose replacement was refused.
        node_id: String,
        /// When.
        at: u64,
    },
    /// Automatic replacement runs again.
    CircuitBreakerClosed {
        /// `window_passed` or `reset`.
        reason: String,
        /// When.
        at: u64,
    },
}

impl ProvisionerEvent {
    /// The snake_case type tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            ProvisionerEvent::PoolConfigured { .. } => "pool_configured",
            ProvisionerEvent::ScaleDecided { .. } => "scale_decided",
            ProvisionerEvent::NodeRequested { .. } => "node_requested",
            ProvisionerEvent::NodeProvisioned { .. } => "node_provisioned",
            ProvisionerEvent::NodeRegistered { .. } => "node_registered",
            ProvisionerEvent::NodeFailed { .. } => "node_failed",
            ProvisionerEvent::NodeHealthEvaluated { .. } => "node_health_evaluated",
            ProvisionerEvent::NodeCordoned { .. } => "node_cordoned",
            ProvisionerEvent::NodeUncordoned { .. } => "node_uncordoned",
            ProvisionerEvent::NodeDrainStarted { .. } => "node_drain_started",
            ProvisionerEvent::NodeDrainOverdue { .. } => "node_drain_overdue",
            ProvisionerEvent::NodeDrained { .. } => "node_drained",
            ProvisionerEvent::NodeTerminationRequested { .. } => "node_termination_requested",
            ProvisionerEvent::NodeTerminated { .. } => "node_terminated",
            ProvisionerEvent::ProviderCallFailed { .. } => "provider_call_failed",
            ProvisionerEvent::CircuitBreakerTripped { .. } => "circuit_breaker_tripped",
            ProvisionerEvent::CircuitBreakerClosed { .. } => "circuit_breaker_closed",
        }
    }

    /// The node the event is about, if any.
    pub fn node_id(&self) -> Option<&str> {
        use ProvisionerEvent::*;
        match self {
            NodeRequested { node_id, .. }
            | NodeProvisioned { node_id, .. }
            | NodeRegistered { node_id, .. }
            | NodeFailed { node_id, .. }
            | NodeHealthEvaluated { node_id, .. }
            | NodeCordoned { node_id, .. }
            | NodeUncordoned { node_id, .. }
            | NodeDrainStarted { node_id, .. }
            | NodeDrainOverdue { node_id, .. }
            | NodeDrained { node_id, .. }
            | NodeTerminationRequested { node_id, .. }
            | NodeTerminated { node_id, .. }
            | ProviderCallFailed { node_id, .. }
            | CircuitBreakerTripped { node_id, .. } => Some(node_id),
            PoolConfigured { .. } | ScaleDecided { .. } | CircuitBreakerClosed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommandRequest;
    use serde_json::json;

    #[test]
    fn commands_parse_with_either_pool_spelling() {
        let seed = json!({"type": "apply_pool", "now": 1, "config": {
            "name": "p", "provider": "sim",
            "scaling": {"min_nodes": 1, "max_nodes": 3, "cooldown_period": "1m"},
            "health": {"unhealthy_threshold": 2}}});
        let cmd: ProvisionerCommand = CommandRequest::from_value(seed, None)
            .unwrap()
            .parse("provisioner", COMMAND_TYPES)
            .unwrap();
        let ProvisionerCommand::ApplyPool { config, .. } = cmd else {
            panic!("not apply_pool")
        };
        assert_eq!(config.cooldown.0, 60);
        let bad = json!({"type": "apply_pool", "now": 1, "config": {
            "name": "p", "provider": "sim", "min_nodes": 4, "max_nodes": 3}});
        let e = CommandRequest::from_value(bad, None)
            .unwrap()
            .parse::<ProvisionerCommand>("provisioner", COMMAND_TYPES)
            .unwrap_err();
        assert!(
            e.message
                .contains("min_nodes (4) must not exceed max_nodes (3)"),
            "{e}"
        );
    }

    #[test]
    fn every_command_type_is_listed() {
        let tick = serde_json::to_value(ProvisionerCommand::Tick {
            now: 1,
            samples: vec![],
            heartbeats: BTreeMap::new(),
        })
        .unwrap();
        assert!(COMMAND_TYPES.contains(&tick["type"].as_str().unwrap()));
    }
}
