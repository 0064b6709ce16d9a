//! The pool aggregate: one GPU node pool and the lifecycle of its nodes.
//!
//! ```text
//! provisioning → registering → active ⇄ degraded → cordoned → draining → terminating → terminated
//!        └──────────────┴──→ failed (provisioning error, registration timeout)
//! ```
//!
//! Every command ends with a reconciliation pass over the state it
//! produced, so the pool converges from wherever it is:
//!
//! 1. a node whose consecutive unhealthy evaluations reached the pool's
//!    `unhealthy_threshold` is taken out: a GPU-reset verdict only cordons
//!    it (a later healthy report uncordons it); otherwise, with
//!    `auto_replace`, it is cordoned, drained and replaced — unless the
//!    circuit breaker is open or this replacement would trip it (more than
//!    `max_replaced_percent` of the pool replaced within `window`), which
//!    is recorded as `circuit_breaker_tripped` and stops replacement until
//!    the window passes or `reset_circuit_breaker`;
//! 2. make-before-break: the replacement is requested at once (up to
//!    `max_nodes + surge` nodes in all), the old node is terminated only
//!    once it is drained *and* its replacement is active;
//! 3. the pool is brought to its desired size: new nodes requested, surplus
//!    nodes (registering first, then the newest) drained and terminated.
//!
//! Health counts what was evaluated, not transitions (Navarch counted
//! transitions into unhealthy, so a node that stayed unhealthy never
//! reached its threshold): each unhealthy report adds one, any other
//! verdict resets the count. Reports within `boot_grace` of registration
//! are not counted. A node whose agent is silent past `heartbeat_timeout`
//! (the host lists when each watched agent was last heard in `tick`) is
//! unhealthy at once and replaced.

use super::autoscaler::{decide_scale, ScaleInput, ScaleLimits};
use flotilla_host::Aggregate;
use flotilla_messages::fleet::{DrainMode, PoolConfig};
use flotilla_messages::health::{HealthAction, Verdict};
use flotilla_messages::provisioner::{
    NodeSpec, NodeTarget, ProvisionerCommand, ProvisionerEvent, RemovalReason, RequestReason,
    SignalSample, COMMAND_TYPES,
};
use flotilla_messages::{Actor, ErrorCode, Rejection};
use imbl::{OrdMap, OrdSet, Vector};
use index::NodeIndex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

mod index;

/// After a provisioning failure, no new node is requested for this long
/// (a provider that always fails must not be hammered).
pub const PROVISION_RETRY_BACKOFF_MS: u64 = 10_000;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Requested from the provider.
    Provisioning,
    /// Created; waiting for its agent.
    Registering,
    /// In service.
    Active,
    /// In service, with a degraded verdict.
    Degraded,
    /// Takes no new work.
    Cordoned,
    /// Workloads are moving off.
    Draining,
    /// Being deleted.
    Terminating,
    /// Gone.
    Terminated,
    /// Never came up.
    Failed,
}

impl NodeStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Provisioning => "provisioning",
            NodeStatus::Registering => "registering",
            NodeStatus::Active => "active",
            NodeStatus::Degraded => "degraded",
            NodeStatus::Cordoned => "cordoned",
            NodeStatus::Draining => "draining",
            NodeStatus::Terminating => "terminating",
            NodeStatus::Terminated => "terminated",
            NodeStatus::Failed => "failed",
        }
    }

    /// In service.
    pub fn serving(self) -> bool {
        matches!(self, NodeStatus::Active | NodeStatus::Degraded)
    }

    /// Gone for good.
    pub fn gone(self) -> bool {
        matches!(self, NodeStatus::Terminated | NodeStatus::Failed)
    }

    /// Every status, in lifecycle order.
    pub const ALL: [NodeStatus; 9] = [
        NodeStatus::Provisioning,
        NodeStatus::Registering,
        NodeStatus::Active,
        NodeStatus::Degraded,
        NodeStatus::Cordoned,
        NodeStatus::Draining,
        NodeStatus::Terminating,
        NodeStatus::Terminated,
        NodeStatus::Failed,
    ];
}

/// A drain in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    /// What happens at the deadline.
    pub mode: DrainMode,
    /// When it times out, unix milliseconds.
    pub deadline: u64,
    /// Whether the node is empty.
    pub done: bool,
    /// Whether `node_drain_overdue` was recorded.
    pub overdue: bool,
}

/// One node of the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// `<pool>-<n>`.
    pub id: String,
    /// Lifecycle.
    pub status: NodeStatus,
    /// The provider's id, once created.
    pub instance_id: Option<String>,
    /// The last verdict counted.
    pub health: Verdict,
    /// The action the last unhealthy verdict recommended.
    pub action: HealthAction,
    /// Consecutive unhealthy evaluations.
    pub consecutive_unhealthy: u32,
    /// The reasons of the last evaluation that was not healthy.
    pub reasons: Vec<String>,
    /// When requested / provisioned / registered.
    pub requested_at: u64,
    /// When the provider created it.
    pub provisioned_at: Option<u64>,
    /// When it registered.
    pub registered_at: Option<u64>,
    /// Why it is leaving the pool.
    pub removal: Option<RemovalReason>,
    /// The node it replaces.
    pub replaces: Option<String>,
    /// Its replacement.
    pub replaced_by: Option<String>,
    /// The drain, once started.
    pub drain: Option<Drain>,
    /// Whether its agent registered it (its heartbeats are watched).
    #[serde(default)]
    pub agent: bool,
    /// When it was last cordoned.
    #[serde(default)]
    pub cordoned_at: Option<u64>,
}

impl Node {
    fn new(id: &str, replaces: Option<String>, at: u64) -> Self {
        Node {
            id: id.to_string(),
            status: NodeStatus::Provisioning,
            instance_id: None,
            health: Verdict::Healthy,
            action: HealthAction::None,
            consecutive_unhealthy: 0,
            reasons: Vec::new(),
            requested_at: at,
            provisioned_at: None,
            registered_at: None,
            removal: None,
            replaces,
            replaced_by: None,
            drain: None,
            agent: false,
            cordoned_at: None,
        }
    }

    /// Counts toward the pool's size: coming up, serving, or cordoned for
    /// a GPU reset (it comes back).
    fn is_live(&self) -> bool {
        match self.status {
            NodeStatus::Provisioning | NodeStatus::Registering => true,
            s if s.serving() => true,
            // Cordoned without a drain: it may come back (GPU reset, or
            // unhealthy in a pool without auto_replace).
            NodeStatus::Cordoned => self.drain.is_none(),
            _ => false,
        }
    }

    fn view(&self) -> Value {
        json!({
            "node_id": self.id,
            "status": self.status.as_str(),
            "health": self.health.as_str(),
            "consecutive_unhealthy": self.consecutive_unhealthy,
            "reasons": self.reasons,
            "instance_id": self.instance_id,
            "replaces": self.replaces,
            "replaced_by": self.replaced_by,
            "removal": self.removal,
            "registered_at": self.registered_at,
            "drain": self.drain,
            "agent": self.agent,
        })
    }
}

/// A pool's state once configured.
///
/// Cloning it is O(1) (shared configuration, persistent maps), which is
/// what lets a decision work on a copy of a pool of any size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PoolRecord")]
pub struct PoolState {
    /// The configuration.
    pub config: Arc<PoolConfig>,
    /// The size the pool is driven to.
    pub desired: u32,
    /// When the desired size last changed.
    pub last_scale_at: Option<u64>,
    /// The number of the next node.
    pub next_number: u64,
    /// Every node ever requested, by id (a persistent map: a decision's
    /// working copy shares it, and a change copies one path of the tree).
    pub nodes: OrdMap<Arc<str>, Arc<Node>>,
    /// When each replacement was requested, oldest first (for the
    /// circuit breaker).
    pub replacements: Vector<u64>,
    /// When the circuit breaker tripped, while it is open.
    pub breaker_open_since: Option<u64>,
    /// When a provisioning last failed.
    pub last_provision_failure: Option<u64>,
    /// Derived from `nodes`, never stored.
    #[serde(skip)]
    index: NodeIndex,
}

/// What a snapshot of a pool holds: the state without its index.
#[derive(Deserialize)]
struct PoolRecord {
    config: Arc<PoolConfig>,
    desired: u32,
    last_scale_at: Option<u64>,
    next_number: u64,
    nodes: OrdMap<Arc<str>, Arc<Node>>,
    replacements: Vector<u64>,
    breaker_open_since: Option<u64>,
    last_provision_failure: Option<u64>,
}

impl From<PoolRecord> for PoolState {
    fn from(r: PoolRecord) -> Self {
        let index = NodeIndex::build(&r.nodes, r.config.health.unhealthy_threshold);
        PoolState {
            config: r.config,
            desired: r.desired,
            last_scale_at: r.last_scale_at,
            next_number: r.next_number,
            nodes: r.nodes,
            replacements: r.replacements,
            breaker_open_since: r.breaker_open_since,
            last_provision_failure: r.last_provision_failure,
            index,
        }
    }
}

/// The pool aggregate (`provisioner/<pool>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    state: Option<PoolState>,
}

impl Pool {
    /// The state, once configured.
    pub fn state(&self) -> Option<&PoolState> {
        self.state.as_ref()
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.state.as_ref()?.nodes.get(id).map(|n| &**n)
    }
}

impl PoolState {
    fn new(config: Arc<PoolConfig>) -> Self {
        PoolState {
            config,
            desired: 0,
            last_scale_at: None,
            next_number: 0,
            nodes: OrdMap::new(),
            replacements: Vector::new(),
            breaker_open_since: None,
            last_provision_failure: None,
            index: NodeIndex::default(),
        }
    }

    /// Nodes in service.
    pub fn serving(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .values()
            .filter(|n| n.status.serving())
            .map(|n| &**n)
    }

    /// How many nodes are in `status` (from the index: O(1)).
    pub fn count(&self, status: NodeStatus) -> u32 {
        self.index.count_of(status)
    }

    /// Serving nodes (active or degraded), O(1).
    pub fn serving_count(&self) -> u32 {
        self.count(NodeStatus::Active) + self.count(NodeStatus::Degraded)
    }

    fn live(&self) -> u32 {
        self.index.live
    }

    fn present(&self) -> u32 {
        self.index.present
    }

    fn node_id(&self, number: u64) -> String {
        format!("{}-{number}", self.config.name)
    }

    fn replacements_within(&self, now: u64) -> u32 {
        let window = self.config.replacement.circuit_breaker.window.millis();
        // Oldest first: count back from the newest until one is too old.
        self.replacements
            .iter()
            .rev()
            .take_while(|&&at| at.saturating_add(window) > now)
            .count() as u32
    }

    fn apply(&mut self, event: &ProvisionerEvent) {
        use ProvisionerEvent::*;
        match event {
            // The size follows in its own `scale_decided`.
            PoolConfigured { config, .. } => {
                self.config = Arc::new((**config).clone());
                // The unhealthy threshold decides who is due.
                self.index = NodeIndex::build(&self.nodes, self.config.health.unhealthy_threshold);
            }
            ScaleDecided { to, at, .. } => {
                self.desired = *to;
                self.last_scale_at = Some(*at);
            }
            NodeRequested {
                node_id,
                replaces,
                at,
                ..
            } => {
                self.next_number += 1;
                let id: Arc<str> = Arc::from(node_id.as_str());
                let before = self.nodes.insert(
                    id.clone(),
                    Arc::new(Node::new(node_id, replaces.clone(), *at)),
                );
                self.refile(&id, before.as_deref());
                if let Some(old) = replaces {
                    self.update(old, |n| n.replaced_by = Some(node_id.clone()));
                }
            }
            NodeProvisioned {
                node_id,
                instance_id,
                at,
            } => self.update(node_id, |n| {
                n.instance_id = Some(instance_id.clone());
                n.provisioned_at = Some(*at);
                if n.status == NodeStatus::Provisioning {
                    n.status = NodeStatus::Registering;
                }
            }),
            NodeRegistered {
                node_id,
                at,
                by_agent,
            } => self.update(node_id, |n| {
                n.registered_at = Some(*at);
                n.agent = *by_agent;
                n.status = NodeStatus::Active;
            }),
            NodeFailed {
                node_id,
                reason,
                at,
                ..
            } => {
                if *reason == RemovalReason::ProvisionFailed {
                    self.last_provision_failure = Some(*at);
                }
                self.update(node_id, |n| {
                    n.status = NodeStatus::Failed;
                    n.removal = Some(reason.clone());
                });
            }
            NodeHealthEvaluated {
                node_id,
                verdict,
                action,
                consecutive_unhealthy,
                reasons,
                ..
            } => self.update(node_id, |n| {
                n.health = *verdict;
                n.action = *action;
                n.consecutive_unhealthy = *consecutive_unhealthy;
                if *verdict != Verdict::Healthy {
                    n.reasons = reasons.clone();
                }
                n.status = match (n.status, verdict) {
                    (NodeStatus::Active, Verdict::Degraded) => NodeStatus::Degraded,
                    (NodeStatus::Degraded, Verdict::Healthy) => NodeStatus::Active,
                    (s, _) => s,
                };
            }),
            NodeCordoned {
                node_id,
                reason,
                at,
                ..
            } => self.update(node_id, |n| {
                n.status = NodeStatus::Cordoned;
                n.removal = Some(reason.clone());
                n.cordoned_at = Some(*at);
            }),
            NodeUncordoned { node_id, .. } => self.update(node_id, |n| {
                n.status = NodeStatus::Active;
                n.removal = None;
                n.health = Verdict::Healthy;
                n.consecutive_unhealthy = 0;
            }),
            NodeDrainStarted {
                node_id,
                mode,
                deadline,
                at,
                ..
            } => {
                if self
                    .nodes
                    .get(node_id.as_str())
                    .and_then(|n| n.removal.as_ref())
                    == Some(&RemovalReason::Unhealthy)
                {
                    self.replacements.push_back(*at);
                }
                self.update(node_id, |n| {
                    n.status = NodeStatus::Draining;
                    n.drain = Some(Drain {
                        mode: *mode,
                        deadline: *deadline,
                        done: false,
                        overdue: false,
                    });
                })
            }
            NodeDrainOverdue { node_id, .. } => self.update(node_id, |n| {
                if let Some(d) = n.drain.as_mut() {
                    d.overdue = true;
                }
            }),
            NodeDrained { node_id, .. } => self.update(node_id, |n| {
                if let Some(d) = n.drain.as_mut() {
                    d.done = true;
                }
            }),
            NodeTerminationRequested { node_id, .. } => {
                self.update(node_id, |n| n.status = NodeStatus::Terminating)
            }
            NodeTerminated { node_id, .. } => {
                self.update(node_id, |n| n.status = NodeStatus::Terminated)
            }
            ProviderCallFailed { .. } => {}
            CircuitBreakerTripped { at, .. } => self.breaker_open_since = Some(*at),
            CircuitBreakerClosed { reason, .. } => {
                self.breaker_open_since = None;
                if reason == "reset" {
                    // A reset forgives the replacements counted so far.
                    self.replacements.clear();
                }
            }
        }
    }

    fn update(&mut self, node_id: &str, change: impl FnOnce(&mut Node)) {
        let Some((id, before)) = self.nodes.get_key_value(node_id) else {
            return;
        };
        let (id, before) = (id.clone(), before.clone());
        if let Some(n) = self.nodes.get_mut(node_id) {
            change(Arc::make_mut(n));
        }
        self.refile(&id, Some(&before));
    }

    /// Keeps the index in step after node `id` changed from `before`; the
    /// node it replaces is re-filed too (whether it still awaits a
    /// replacement, or may be terminated, depends on this one).
    fn refile(&mut self, id: &Arc<str>, before: Option<&Node>) {
        let threshold = self.config.health.unhealthy_threshold;
        self.index.refile(id, before, &self.nodes, threshold);
        let old = self.nodes.get(id).and_then(|n| n.replaces.as_deref());
        if let Some((old_id, old)) = old.and_then(|o| self.nodes.get_key_value(o)) {
            let (old_id, old) = (old_id.clone(), old.clone());
            self.index
                .refile(&old_id, Some(&old), &self.nodes, threshold);
        }
    }

    fn view(&self) -> Value {
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for n in self.nodes.values() {
            *counts.entry(n.status.as_str()).or_default() += 1;
        }
        let healthy = self
            .serving()
            .filter(|n| n.health != Verdict::Unhealthy)
            .count();
        let unhealthy = self
            .nodes
            .values()
            .filter(|n| !n.status.gone() && n.health == Verdict::Unhealthy)
            .count();
        json!({
            "pool": self.config.name,
            "config": self.config,
            "desired": self.desired,
            "live": self.live(),
            "healthy": healthy,
            "unhealthy": unhealthy,
            "counts": counts,
            "replacements": self.replacements.len(),
            "circuit_breaker": if self.breaker_open_since.is_some() { "open" } else { "closed" },
            "breaker_open_since": self.breaker_open_since,
            "nodes": self.nodes.values().map(|n| n.view()).collect::<Vec<_>>(),
        })
    }
}

/// Events decided so far, and the state they lead to.
struct Plan {
    state: PoolState,
    events: Vec<ProvisionerEvent>,
    now: u64,
}

impl Plan {
    fn push(&mut self, event: ProvisionerEvent) {
        self.state.apply(&event);
        self.events.push(event);
    }

    fn node(&self, id: &str) -> Result<&Node, Rejection> {
        self.state.nodes.get(id).map(|n| &**n).ok_or_else(|| {
            Rejection::new(
                ErrorCode::NotFound,
                format!("node {id:?} is not in pool {}", self.state.config.name),
            )
        })
    }

    /// Time-driven transitions: registration and drain deadlines, silent
    /// agents, the circuit breaker's window, the autoscaler.
    fn tick(&mut self, samples: &[SignalSample], heartbeats: &BTreeMap<String, u64>) {
        let now = self.now;
        let cfg = self.state.config.clone();
        for n in &self.tick_candidates(heartbeats) {
            let timed_out = n.status == NodeStatus::Registering
                && n.provisioned_at.unwrap_or(n.requested_at)
                    + cfg.replacement.registration_timeout.millis()
                    <= now;
            if timed_out {
                self.push(ProvisionerEvent::NodeFailed {
                    node_id: n.id.clone(),
                    reason: RemovalReason::RegistrationTimeout,
                    error: None,
                    at: now,
                });
                self.terminate(&n.id);
            }
            if let Some(last) = heartbeats.get(&n.id) {
                self.check_heartbeat(n, *last);
            }
            if let (NodeStatus::Draining, Some(d)) = (n.status, &n.drain) {
                if !d.done && now >= d.deadline {
                    match d.mode {
                        DrainMode::Wait if !d.overdue => {
                            self.push(ProvisionerEvent::NodeDrainOverdue {
                                node_id: n.id.clone(),
                                at: now,
                            })
                        }
                        DrainMode::Wait => {}
                        _ => self.push(ProvisionerEvent::NodeDrained {
                            node_id: n.id.clone(),
                            forced: true,
                            at: now,
                        }),
                    }
                }
            }
        }
        if let Some(since) = self.state.breaker_open_since {
            if now >= since + cfg.replacement.circuit_breaker.window.millis() {
                self.push(ProvisionerEvent::CircuitBreakerClosed {
                    reason: "window_passed".into(),
                    at: now,
                });
            }
        }
        self.autoscale(samples);
    }

    /// The nodes a tick can change, in id order: those with a heartbeat
    /// listed, a registration pending or a drain under way. Every other
    /// node has no deadline to meet.
    fn tick_candidates(&self, heartbeats: &BTreeMap<String, u64>) -> Vec<Arc<Node>> {
        let index = &self.state.index;
        let mut ids: BTreeSet<&str> = heartbeats.keys().map(String::as_str).collect();
        ids.extend(index.registering.iter().map(|id| &**id));
        ids.extend(index.draining.iter().map(|id| &**id));
        ids.into_iter()
            .filter_map(|id| self.state.nodes.get(id).cloned())
            .collect()
    }

    /// The nodes named by `set`, in id order.
    fn nodes_in(&self, set: &OrdSet<Arc<str>>) -> Vec<Arc<Node>> {
        set.iter()
            .filter_map(|id| self.state.nodes.get(id).cloned())
            .collect()
    }

    fn check_heartbeat(&mut self, n: &Node, last_heard: u64) {
        let h = &self.state.config.health;
        let Some(registered) = n.registered_at else {
            return;
        };
        let in_grace = self.now < registered + h.boot_grace.millis();
        let silent = self.now >= last_heard.max(registered) + h.heartbeat_timeout.millis();
        let flagged =
            n.reasons.iter().any(|r| r == "heartbeat_timeout") && n.health == Verdict::Unhealthy;
        if n.status.serving() && !in_grace && silent && !flagged {
            self.push(ProvisionerEvent::NodeHealthEvaluated {
                node_id: n.id.clone(),
                verdict: Verdict::Unhealthy,
                action: HealthAction::Replace,
                consecutive_unhealthy: n.consecutive_unhealthy.max(h.unhealthy_threshold),
                reasons: vec!["heartbeat_timeout".into()],
                at: self.now,
            });
        }
    }

    fn autoscale(&mut self, samples: &[SignalSample]) {
        let cfg = &self.state.config;
        let Some(autoscaler) = cfg.autoscaling.as_ref() else {
            return;
        };
        let limits = ScaleLimits {
            min: cfg.min_nodes,
            max: cfg.max_nodes,
            cooldown_ms: cfg.cooldown.millis(),
            last_change_at: self.state.last_scale_at,
        };
        let input = ScaleInput {
            now: self.now,
            current: self.state.desired,
            samples,
        };
        if let Some(to) = decide_scale(autoscaler, limits, input) {
            let reason = format!("autoscaler:{}", autoscaler_name(autoscaler));
            self.scale_to(to, reason);
        }
    }

    fn scale_to(&mut self, to: u32, reason: String) {
        let cfg = &self.state.config;
        let to = to.clamp(cfg.min_nodes, cfg.max_nodes);
        if to != self.state.desired {
            self.push(ProvisionerEvent::ScaleDecided {
                from: self.state.desired,
                to,
                reason,
                at: self.now,
            });
        }
    }

    fn report(
        &mut self,
        node_id: &str,
        verdict: Verdict,
        action: HealthAction,
        reasons: &[String],
    ) -> Result<(), Rejection> {
        let node = self.node(node_id)?.clone();
        if matches!(
            node.status,
            NodeStatus::Provisioning | NodeStatus::Registering
        ) {
            self.register(&node.id, true);
            return Ok(());
        }
        if report_changes_nothing(&self.state, &node, verdict, action, reasons, self.now) {
            return Ok(());
        }
        let consecutive = match verdict {
            Verdict::Unhealthy => node.consecutive_unhealthy + 1,
            _ => 0,
        };
        self.push(ProvisionerEvent::NodeHealthEvaluated {
            node_id: node.id.clone(),
            verdict,
            action,
            consecutive_unhealthy: consecutive,
            reasons: reasons.to_vec(),
            at: self.now,
        });
        let recovered = returns_when_healthy(&node) && verdict == Verdict::Healthy;
        if recovered {
            self.push(ProvisionerEvent::NodeUncordoned {
                target: self.target(&node.id),
                node_id: node.id,
                at: self.now,
            });
        }
        Ok(())
    }

    /// An operator's cordon: serving nodes only; a repeat changes nothing.
    fn operator_cordon(&mut self, node_id: &str) -> Result<(), Rejection> {
        let node = self.node(node_id)?;
        match node.status {
            s if s.serving() => self.cordon(node_id, RemovalReason::Operator),
            NodeStatus::Cordoned if node.removal == Some(RemovalReason::Operator) => {}
            s => return Err(not_in_service(node_id, s)),
        }
        Ok(())
    }

    /// Only what an operator cordoned comes back by hand: a node the pool
    /// took out for its health returns when its agent reports it healthy.
    fn operator_uncordon(&mut self, node_id: &str) -> Result<(), Rejection> {
        let node = self.node(node_id)?;
        let by_operator =
            node.status == NodeStatus::Cordoned && node.removal == Some(RemovalReason::Operator);
        if node.status.serving() {
            return Ok(());
        }
        if !by_operator || node.drain.is_some() {
            return Err(Rejection::new(
                ErrorCode::InvalidState,
                format!(
                    "node {node_id} is {} ({}): only a node cordoned by an operator is uncordoned by hand",
                    node.status.as_str(),
                    node.removal.as_ref().map_or("no reason".into(), |r| format!("{r:?}"))
                ),
            ));
        }
        self.push(ProvisionerEvent::NodeUncordoned {
            target: self.target(node_id),
            node_id: node_id.to_string(),
            at: self.now,
        });
        Ok(())
    }

    /// An operator's drain: the node is cordoned (if it is not yet) and
    /// drained; once empty it is terminated and a new node takes its place.
    fn operator_drain(&mut self, node_id: &str) -> Result<(), Rejection> {
        let node = self.node(node_id)?;
        let (status, cordoned_by_operator) = (
            node.status,
            node.removal == Some(RemovalReason::Operator) && node.drain.is_none(),
        );
        if status.serving() {
            self.cordon(node_id, RemovalReason::Operator);
        } else if !(status == NodeStatus::Cordoned && cordoned_by_operator) {
            if matches!(status, NodeStatus::Draining | NodeStatus::Terminating) || status.gone() {
                return Ok(());
            }
            return Err(not_in_service(node_id, status));
        }
        self.start_drain(node_id);
        Ok(())
    }

    fn register(&mut self, node_id: &str, by_agent: bool) {
        self.push(ProvisionerEvent::NodeRegistered {
            node_id: node_id.to_string(),
            by_agent,
            at: self.now,
        });
    }

    /// Brings the pool toward its desired, healthy state (see the module doc).
    fn reconcile(&mut self) {
        self.take_out_unhealthy();
        self.request_nodes();
        self.remove_surplus();
        self.terminate_drained();
    }

    fn take_out_unhealthy(&mut self) {
        let auto_replace = self.state.config.health.auto_replace;
        if auto_replace && self.state.breaker_open_since.is_none() {
            self.replace_failed_resets();
        }
        // With the breaker open only GPU resets act: look at no other node.
        let due = if auto_replace && self.state.breaker_open_since.is_some() {
            self.nodes_in(&self.state.index.due_reset)
        } else {
            self.nodes_in(&self.state.index.due)
        };
        for n in due {
            if n.action == HealthAction::ResetGpu {
                self.cordon(&n.id, RemovalReason::GpuReset);
            } else if !self.state.config.health.auto_replace {
                self.cordon(&n.id, RemovalReason::Unhealthy);
            } else if self.state.breaker_open_since.is_none() && !self.trips_breaker(&n.id) {
                self.cordon(&n.id, RemovalReason::Unhealthy);
                self.start_drain(&n.id);
            }
        }
    }

    /// A reset that did not bring the node back within `reset_timeout`:
    /// the node is replaced like any unhealthy node.
    fn replace_failed_resets(&mut self) {
        let reset_timeout = self.state.config.replacement.reset_timeout.millis();
        let mut stuck: Vec<Arc<Node>> = self
            .state
            .index
            .resetting
            .iter()
            .take_while(|(at, _)| self.now >= at + reset_timeout)
            .filter_map(|(_, id)| self.state.nodes.get(id).cloned())
            .collect();
        stuck.sort_by(|a, b| a.id.cmp(&b.id));
        for n in stuck {
            if self.state.config.health.auto_replace
                && self.state.breaker_open_since.is_none()
                && !self.trips_breaker(&n.id)
            {
                self.cordon(&n.id, RemovalReason::Unhealthy);
                self.start_drain(&n.id);
            }
        }
    }

    /// Whether one more replacement trips the breaker (recording it if so).
    fn trips_breaker(&mut self, node_id: &str) -> bool {
        let cb = self.state.config.replacement.circuit_breaker.clone();
        let replacements = self.state.replacements_within(self.now) + 1;
        let pool_size = self.state.desired.max(1);
        let percent = f64::from(replacements) * 100.0 / f64::from(pool_size);
        if percent <= cb.max_replaced_percent {
            return false;
        }
        self.push(ProvisionerEvent::CircuitBreakerTripped {
            replacements,
            pool_size: self.state.desired,
            percent,
            limit_percent: cb.max_replaced_percent,
            window_seconds: cb.window.0,
            node_id: node_id.to_string(),
            at: self.now,
        });
        true
    }

    /// Where a provider call for `node_id` goes.
    fn target(&self, node_id: &str) -> NodeTarget {
        NodeTarget {
            provider: self.state.config.provider.clone(),
            instance_id: self
                .state
                .nodes
                .get(node_id)
                .and_then(|n| n.instance_id.clone()),
        }
    }

    fn terminate(&mut self, node_id: &str) {
        self.push(ProvisionerEvent::NodeTerminationRequested {
            target: self.target(node_id),
            node_id: node_id.to_string(),
            at: self.now,
        });
    }

    fn cordon(&mut self, node_id: &str, reason: RemovalReason) {
        self.push(ProvisionerEvent::NodeCordoned {
            target: self.target(node_id),
            node_id: node_id.to_string(),
            reason,
            at: self.now,
        });
    }

    fn start_drain(&mut self, node_id: &str) {
        let r = &self.state.config.replacement;
        self.push(ProvisionerEvent::NodeDrainStarted {
            target: self.target(node_id),
            node_id: node_id.to_string(),
            mode: r.drain_mode,
            deadline: self.now + r.drain_timeout.millis(),
            at: self.now,
        });
    }

    /// Nodes taken out for faults whose replacement is missing or failed.
    /// The first `n` nodes taken out for a fault with no replacement on its way.
    fn awaiting_replacement(&self, n: u32) -> Vec<String> {
        let index = &self.state.index;
        let first = index.awaiting.iter().take(n as usize);
        first.map(|id| id.to_string()).collect()
    }

    fn request_nodes(&mut self) {
        let cap = self.state.config.max_nodes + self.state.config.replacement.surge;
        let backoff = self
            .state
            .last_provision_failure
            .is_some_and(|at| self.now < at + PROVISION_RETRY_BACKOFF_MS);
        if backoff {
            return;
        }
        let (mut live, mut present) = (self.state.live(), self.state.present());
        if live >= self.state.desired || present >= cap {
            return;
        }
        let wanted = (self.state.desired - live).min(cap - present);
        let mut waiting = self.awaiting_replacement(wanted).into_iter();
        while live < self.state.desired && present < cap {
            live += 1;
            present += 1;
            let replaces = waiting.next();
            let number = self.state.next_number + 1;
            self.push(ProvisionerEvent::NodeRequested {
                node_id: self.state.node_id(number),
                reason: if replaces.is_some() {
                    RequestReason::Replacement
                } else {
                    RequestReason::ScaleUp
                },
                replaces,
                spec: NodeSpec::of(&self.state.config),
                at: self.now,
            });
        }
    }

    fn remove_surplus(&mut self) {
        let surplus = self.state.live().saturating_sub(self.state.desired);
        if surplus == 0 {
            return;
        }
        // Registering first, then degraded, then the newest.
        let candidates: Vec<Arc<Node>> = self
            .state
            .index
            .surplus
            .iter()
            .take(surplus as usize)
            .filter_map(|(_, _, id)| self.state.nodes.get(&*id.0).cloned())
            .collect();
        for n in candidates {
            if n.status == NodeStatus::Registering {
                self.terminate(&n.id);
            } else {
                self.cordon(&n.id, RemovalReason::ScaleDown);
                self.start_drain(&n.id);
            }
        }
    }

    fn terminate_drained(&mut self) {
        // With no room for a replacement (surge 0 at max_nodes), break
        // before make rather than wait forever.
        let no_room = self.state.present()
            >= self.state.config.max_nodes + self.state.config.replacement.surge;
        let index = &self.state.index;
        let mut ready: Vec<Arc<str>> = index.drained_ready.iter().cloned().collect();
        if no_room {
            ready.extend(index.drained_waiting.iter().cloned());
            ready.sort();
        }
        for id in ready {
            self.terminate(&id);
        }
    }
}

fn autoscaler_name(a: &flotilla_messages::fleet::AutoscalerConfig) -> &'static str {
    use flotilla_messages::fleet::AutoscalerConfig::*;
    match a {
        Reactive { .. } => "reactive",
        Queue { .. } => "queue",
        Scheduled { .. } => "scheduled",
        Predictive { .. } => "predictive",
        Composite { .. } => "composite",
    }
}

fn not_in_service(node_id: &str, status: NodeStatus) -> Rejection {
    Rejection::new(
        ErrorCode::InvalidState,
        format!("node {node_id} is {}, not in service", status.as_str()),
    )
}

fn not_found() -> Rejection {
    Rejection::new(
        ErrorCode::NotFound,
        "the pool does not exist: send apply_pool first",
    )
}

fn command_now(command: &ProvisionerCommand) -> u64 {
    use ProvisionerCommand::*;
    match command {
        ApplyPool { now, .. }
        | Tick { now, .. }
        | RegisterNode { now, .. }
        | ReportHealth { now, .. }
        | NodeProvisioned { now, .. }
        | NodeProvisionFailed { now, .. }
        | NodeDrained { now, .. }
        | NodeTerminated { now, .. }
        | ProviderCallFailed { now, .. }
        | ResetCircuitBreaker { now }
        | Resize { now, .. }
        | CordonNode { now, .. }
        | UncordonNode { now, .. }
        | DrainNode { now, .. } => *now,
    }
}

impl Pool {
    fn decide_on(
        &self,
        state: &PoolState,
        command: &ProvisionerCommand,
    ) -> Result<Vec<ProvisionerEvent>, Rejection> {
        use ProvisionerCommand as C;
        if is_routine_report(state, command) {
            // Most reports say "still healthy": answer without copying the pool.
            return Ok(vec![]);
        }
        let mut plan = Plan {
            state: state.clone(),
            events: Vec::new(),
            now: command_now(command),
        };
        match command {
            C::ApplyPool { config, .. } => {
                if **config == *state.config {
                    return Ok(vec![]);
                }
                if config.name != state.config.name {
                    return Err(Rejection::invalid(format!(
                        "config.name: {:?} is not this pool ({:?})",
                        config.name, state.config.name
                    )));
                }
                plan.push(ProvisionerEvent::PoolConfigured {
                    config: config.clone(),
                    at: plan.now,
                });
                let clamped = state.desired.clamp(config.min_nodes, config.max_nodes);
                plan.scale_to(clamped, "config".into());
            }
            C::Tick {
                samples,
                heartbeats,
                ..
            } => plan.tick(samples, heartbeats),
            C::RegisterNode { node_id, .. } => {
                let node = plan.node(node_id)?;
                match node.status {
                    NodeStatus::Provisioning | NodeStatus::Registering => {
                        plan.register(node_id, true)
                    }
                    s if s.gone() => {
                        return Err(Rejection::new(
                            ErrorCode::InvalidState,
                            format!("node {node_id} is {}", s.as_str()),
                        ))
                    }
                    _ => {}
                }
            }
            C::ReportHealth {
                node_id,
                verdict,
                action,
                reasons,
                ..
            } => plan.report(node_id, *verdict, *action, reasons)?,
            C::NodeProvisioned {
                node_id,
                instance_id,
                registered,
                ..
            } => {
                let node = plan.node(node_id)?.clone();
                if node.instance_id.is_none() {
                    plan.push(ProvisionerEvent::NodeProvisioned {
                        node_id: node_id.clone(),
                        instance_id: instance_id.clone(),
                        at: plan.now,
                    });
                    if *registered && node.status == NodeStatus::Provisioning {
                        plan.register(node_id, false);
                    }
                }
            }
            C::NodeProvisionFailed { node_id, error, .. } => {
                if plan.node(node_id)?.status == NodeStatus::Provisioning {
                    plan.push(ProvisionerEvent::NodeFailed {
                        node_id: node_id.clone(),
                        reason: RemovalReason::ProvisionFailed,
                        error: Some(error.clone()),
                        at: plan.now,
                    });
                }
            }
            C::NodeDrained {
                node_id, forced, ..
            } => {
                let node = plan.node(node_id)?;
                if node.drain.as_ref().is_some_and(|d| !d.done) {
                    plan.push(ProvisionerEvent::NodeDrained {
                        node_id: node_id.clone(),
                        forced: *forced,
                        at: plan.now,
                    });
                }
            }
            C::NodeTerminated { node_id, .. } => {
                if plan.node(node_id)?.status == NodeStatus::Terminating {
                    plan.push(ProvisionerEvent::NodeTerminated {
                        node_id: node_id.clone(),
                        at: plan.now,
                    });
                }
            }
            C::ProviderCallFailed {
                node_id,
                operation,
                error,
                ..
            } => {
                plan.node(node_id)?;
                plan.push(ProvisionerEvent::ProviderCallFailed {
                    node_id: node_id.clone(),
                    operation: operation.clone(),
                    error: error.clone(),
                    at: plan.now,
                });
            }
            C::ResetCircuitBreaker { .. } => {
                if state.breaker_open_since.is_none() {
                    return Ok(vec![]);
                }
                plan.push(ProvisionerEvent::CircuitBreakerClosed {
                    reason: "reset".into(),
                    at: plan.now,
                });
            }
            C::Resize { nodes, .. } => plan.scale_to(*nodes, "resize".into()),
            C::CordonNode { node_id, .. } => plan.operator_cordon(node_id)?,
            C::UncordonNode { node_id, .. } => plan.operator_uncordon(node_id)?,
            C::DrainNode { node_id, .. } => plan.operator_drain(node_id)?,
        }
        plan.reconcile();
        Ok(plan.events)
    }
}

/// A report that changes nothing (most say "still healthy"), recognised
/// without copying the pool.
fn is_routine_report(state: &PoolState, command: &ProvisionerCommand) -> bool {
    let ProvisionerCommand::ReportHealth {
        node_id,
        verdict,
        action,
        reasons,
        now,
    } = command
    else {
        return false;
    };
    state.nodes.get(node_id.as_str()).is_some_and(|n| {
        !matches!(n.status, NodeStatus::Provisioning | NodeStatus::Registering)
            && report_changes_nothing(state, n, *verdict, *action, reasons, *now)
    })
}

/// Whether a report about a registered node changes nothing: it is within
/// boot grace, about a node on its way out, a repeat of the node's healthy
/// or degraded state, or one more unhealthy report past the threshold
/// saying the same (counting further changes no decision).
/// Whether `node` is out of service only for its health, so a healthy
/// report brings it back: cordoned by the pool (an operator's cordon is
/// lifted by hand only) and not draining.
fn returns_when_healthy(node: &Node) -> bool {
    node.status == NodeStatus::Cordoned
        && node.drain.is_none()
        && node.removal != Some(RemovalReason::Operator)
}

fn report_changes_nothing(
    state: &PoolState,
    node: &Node,
    verdict: Verdict,
    action: HealthAction,
    reasons: &[String],
    now: u64,
) -> bool {
    let health = &state.config.health;
    let in_grace = node
        .registered_at
        .is_some_and(|r| now < r + health.boot_grace.millis());
    let counted = node.status.serving() || node.status == NodeStatus::Cordoned;
    if in_grace || !counted {
        return true;
    }
    match verdict {
        Verdict::Healthy => {
            node.health == Verdict::Healthy
                && node.consecutive_unhealthy == 0
                && !returns_when_healthy(node)
        }
        Verdict::Degraded => node.health == Verdict::Degraded && node.reasons == reasons,
        Verdict::Unhealthy => {
            node.health == Verdict::Unhealthy
                && node.consecutive_unhealthy >= health.unhealthy_threshold
                && node.action == action
                && node.reasons == reasons
        }
    }
}

fn create(command: &ProvisionerCommand) -> Result<Vec<ProvisionerEvent>, Rejection> {
    let ProvisionerCommand::ApplyPool { config, now } = command else {
        return Err(not_found());
    };
    let mut plan = Plan {
        state: PoolState::new(Arc::new((**config).clone())),
        events: Vec::new(),
        now: *now,
    };
    plan.push(ProvisionerEvent::PoolConfigured {
        config: config.clone(),
        at: *now,
    });
    plan.scale_to(config.min_nodes, "config".into());
    plan.reconcile();
    Ok(plan.events)
}

impl Aggregate for Pool {
    const ACTOR: Actor = Actor::Provisioner;
    const COMMAND_TYPES: &'static [&'static str] = COMMAND_TYPES;
    type Command = ProvisionerCommand;
    type Event = ProvisionerEvent;
    type Settings = ();

    fn decide(&self, command: &ProvisionerCommand) -> Result<Vec<ProvisionerEvent>, Rejection> {
        match &self.state {
            None => create(command),
            Some(state) => self.decide_on(state, command),
        }
    }

    fn evolve(mut self, event: &ProvisionerEvent) -> Self {
        match (&mut self.state, event) {
            (None, ProvisionerEvent::PoolConfigured { config, .. }) => {
                self.state = Some(PoolState::new(Arc::new((**config).clone())));
            }
            (Some(state), e) => state.apply(e),
            (None, _) => {}
        }
        self
    }

    fn result(events: &[ProvisionerEvent]) -> Value {
        let requested: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                ProvisionerEvent::NodeRequested { node_id, .. } => Some(node_id.as_str()),
                _ => None,
            })
            .collect();
        json!({
            "events": events.iter().map(ProvisionerEvent::event_type).collect::<Vec<_>>(),
            "nodes_requested": requested,
        })
    }

    fn view(&self) -> Value {
        self.state.as_ref().map_or(Value::Null, PoolState::view)
    }

    fn event_type(event: &ProvisionerEvent) -> &'static str {
        event.event_type()
    }

    fn wants_effect(event: &ProvisionerEvent) -> bool {
        matches!(
            event,
            ProvisionerEvent::NodeRequested { .. }
                | ProvisionerEvent::NodeCordoned { .. }
                | ProvisionerEvent::NodeUncordoned { .. }
                | ProvisionerEvent::NodeDrainStarted { .. }
                | ProvisionerEvent::NodeTerminationRequested { .. }
        )
    }
}

#[cfg(test)]
mod tests;
