//! Placement, the pure part: which node of a pool an attempt goes to, which
//! nodes are ready for work, and when a node's attempts are lost with it.
//!
//! The scheduler learns a pool's nodes from the provisioner's own pool
//! aggregate (`flotilla_provisioner::Pool`, stream `provisioner/<pool>`),
//! folded from the event log by [`crate::NodeDirectory`]; this module
//! only reads that state and the events that change it, so the rules are
//! the provisioner's, not a copy of them:
//!
//! - a node is *ready* while it serves (`active` or `degraded`) and its
//!   last verdict is not `unhealthy`: cordoned, draining, terminating,
//!   terminated and failed nodes take no new attempt;
//! - a node is *lost* — what runs on it stops and runs again elsewhere —
//!   once it failed, is being terminated or is gone, is taken out for a
//!   hardware fault (cordoned or draining as `unhealthy` or `gpu_reset`;
//!   the reason then names the fault, however far its removal went),
//!   or is drained in `evict` mode; a drain that waits for work to finish
//!   (`wait`, `evict_after_timeout`) lets the attempt run until the drain
//!   evicts it (`node_drained` with `forced`) or the node is terminated;
//! - [`choose_node`] picks, among the ready nodes, the one with the fewest
//!   of the queue's running attempts, then the smallest node id.
//!
//! Neighbours: `queue` (the `place` and `node_lost` commands), `nodes` (the
//! directory and the watch that turn provisioner events into commands).

use flotilla_messages::fleet::DrainMode;
use flotilla_messages::health::Verdict;
use flotilla_messages::provisioner::{ProvisionerEvent, RemovalReason};
use flotilla_provisioner::{Node, NodeStatus, PoolState};
use std::collections::BTreeMap;

/// The node an attempt goes to: among `ready`, the one with the fewest
/// attempts in `load` (the queue's attempts running on each node), then
/// the smallest id. `None` when `ready` is empty.
pub fn choose_node<'a, S: AsRef<str>>(
    ready: &'a [S],
    load: &BTreeMap<&str, usize>,
) -> Option<&'a str> {
    ready
        .iter()
        .map(AsRef::as_ref)
        .min_by_key(|node| (load.get(node).copied().unwrap_or(0), *node))
}

/// Whether `node` takes new attempts.
pub fn is_ready(node: &Node) -> bool {
    node.status.serving() && node.health != Verdict::Unhealthy
}

/// The ids of the pool's ready nodes, sorted.
pub fn ready_nodes(pool: &PoolState) -> Vec<String> {
    pool.nodes
        .values()
        .filter(|n| is_ready(n))
        .map(|n| n.id.clone())
        .collect()
}

fn hardware_fault(node: &Node) -> bool {
    matches!(
        node.removal,
        Some(RemovalReason::Unhealthy | RemovalReason::GpuReset)
    )
}

/// Why what runs on `node` is lost, naming the node; `None` while
/// attempts may go on running there.
pub fn loss_reason(node: &Node) -> Option<String> {
    let id = &node.id;
    let taken_out = matches!(
        node.status,
        NodeStatus::Cordoned
            | NodeStatus::Draining
            | NodeStatus::Terminating
            | NodeStatus::Terminated
    );
    let evicting = node.status == NodeStatus::Draining
        && node
            .drain
            .as_ref()
            .is_some_and(|d| d.mode == DrainMode::Evict);
    if node.status == NodeStatus::Failed {
        Some(format!("node {id} failed ({})", removal(node)))
    } else if taken_out && hardware_fault(node) {
        Some(format!("node {id} failed ({})", fault(node)))
    } else if evicting {
        Some(format!(
            "node {id} is drained, evicting its work ({})",
            removal(node)
        ))
    } else if matches!(
        node.status,
        NodeStatus::Terminating | NodeStatus::Terminated
    ) {
        Some(format!("node {id} is terminated ({})", removal(node)))
    } else {
        None
    }
}

/// The removal reason's wire spelling, e.g. `scale_down`.
fn removal(node: &Node) -> String {
    node.removal
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "removed".into())
}

/// What the node's health said, else its removal reason.
fn fault(node: &Node) -> String {
    if node.reasons.is_empty() {
        removal(node)
    } else {
        node.reasons.join(", ")
    }
}

/// A node whose attempts an event made lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoss {
    /// The node.
    pub node: String,
    /// The provisioner event that made it lost (the reaction's commands
    /// are keyed by it, so reacting twice records nothing twice).
    pub event_id: String,
    /// Why, naming the node.
    pub reason: String,
}

/// Whether the provisioner event `event_id` makes its node lost: the node
/// was not lost `before` the event and is `after` it, or a drain evicted
/// its work.
pub fn loss_by(
    event_id: &str,
    event: &ProvisionerEvent,
    before: Option<&Node>,
    after: Option<&Node>,
) -> Option<NodeLoss> {
    let node = after?;
    if before.is_some_and(|n| loss_reason(n).is_some()) {
        return None;
    }
    let reason = match event {
        ProvisionerEvent::NodeDrained { forced: true, .. } => Some(format!(
            "node {} evicted its work at the drain's deadline",
            node.id
        )),
        _ => loss_reason(node),
    }?;
    Some(NodeLoss {
        node: node.id.clone(),
        event_id: event_id.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_host::Aggregate;
    use flotilla_messages::fleet::PoolConfig;
    use flotilla_messages::health::HealthAction;
    use flotilla_messages::provisioner::ProvisionerCommand;
    use flotilla_provisioner::Pool;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn pool_config(drain: &str) -> PoolConfig {
        serde_json::from_value(serde_json::json!({
            "name": "gpu", "provider": "sim",
            "scaling": {"min_nodes": 1, "max_nodes": 4, "cooldown_period": "0s"},
            "health": {"unhealthy_threshold": 1, "boot_grace": "0s", "auto_replace": true},
            "replacement": {"surge": 1, "drain_mode": drain,
                "circuit_breaker": {"max_replaced_percent": 100}},
        }))
        .expect("a pool")
    }

    /// An event and its node before and after it.
    type Seen = (Option<Node>, ProvisionerEvent, Option<Node>);

    fn node_of(pool: &Pool, event: &ProvisionerEvent) -> Option<Node> {
        event.node_id().and_then(|id| pool.node(id)).cloned()
    }

    /// The pool after `commands`, and the events they caused, in order.
    fn run(commands: &[ProvisionerCommand]) -> (Pool, Vec<Seen>) {
        let mut pool = Pool::default();
        let mut seen = Vec::new();
        for c in commands {
            let Ok(events) = pool.decide(c) else { continue };
            for e in events {
                let before = node_of(&pool, &e);
                pool = pool.evolve(&e);
                let after = node_of(&pool, &e);
                seen.push((before, e, after));
            }
        }
        (pool, seen)
    }

    fn apply(drain: &str) -> ProvisionerCommand {
        ProvisionerCommand::ApplyPool {
            config: Box::new(pool_config(drain)),
            now: 1,
        }
    }

    fn up(node: &str, now: u64) -> [ProvisionerCommand; 2] {
        [
            ProvisionerCommand::NodeProvisioned {
                node_id: node.into(),
                instance_id: format!("i-{node}"),
                registered: false,
                now,
            },
            ProvisionerCommand::RegisterNode {
                node_id: node.into(),
                now,
            },
        ]
    }

    fn xid_79(node: &str, now: u64) -> ProvisionerCommand {
        ProvisionerCommand::ReportHealth {
            node_id: node.into(),
            now,
            verdict: Verdict::Unhealthy,
            action: HealthAction::Replace,
            reasons: vec!["xid_replace:xid_79".into()],
        }
    }

    fn three_active(drain: &str) -> Vec<ProvisionerCommand> {
        let mut commands = vec![
            apply(drain),
            ProvisionerCommand::Resize { nodes: 3, now: 1 },
        ];
        for n in ["gpu-1", "gpu-2", "gpu-3"] {
            commands.extend(up(n, 2));
        }
        commands
    }

    #[test]
    fn the_fewest_loaded_node_wins_then_the_smallest_id() {
        let ready = ["gpu-2", "gpu-1", "gpu-3"];
        assert_eq!(choose_node(&ready, &BTreeMap::new()), Some("gpu-1"));
        let load = BTreeMap::from([("gpu-1", 2), ("gpu-2", 1), ("gpu-3", 1)]);
        assert_eq!(choose_node(&ready, &load), Some("gpu-2"));
        // A node not ready never wins, however idle: it is not offered.
        let load = BTreeMap::from([("gpu-1", 1), ("gpu-9", 0)]);
        assert_eq!(choose_node(&["gpu-1"], &load), Some("gpu-1"));
        assert_eq!(choose_node::<&str>(&[], &load), None);
    }

    #[test]
    fn an_xid_79_makes_its_node_lost_naming_the_node_and_the_fault() {
        let mut commands = three_active("evict_after_timeout");
        commands.push(xid_79("gpu-2", 3));
        let (pool, seen) = run(&commands);
        let state = pool.state().unwrap();
        assert_eq!(ready_nodes(state), ["gpu-1", "gpu-3"]);
        let losses: Vec<NodeLoss> = seen
            .iter()
            .enumerate()
            .filter_map(|(i, (b, e, a))| loss_by(&format!("e{i}"), e, b.as_ref(), a.as_ref()))
            .collect();
        assert_eq!(losses.len(), 1, "{losses:?}");
        assert_eq!(losses[0].node, "gpu-2");
        assert_eq!(losses[0].reason, "node gpu-2 failed (xid_replace:xid_79)");
        // The cordon, not the drain that follows in the same append, is the loss.
        let by = &seen[losses[0].event_id[1..].parse::<usize>().unwrap()].1;
        assert_eq!(by.event_type(), "node_cordoned");
    }

    #[test]
    fn a_scale_down_drain_that_waits_lets_the_work_run_until_termination() {
        let mut commands = three_active("wait");
        commands.push(ProvisionerCommand::Resize { nodes: 2, now: 5 });
        let (pool, seen) = run(&commands);
        let state = pool.state().unwrap();
        let leaving: Vec<&Node> = state
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Draining)
            .map(|n| &**n)
            .collect();
        assert_eq!(leaving.len(), 1, "one node drains");
        assert!(!is_ready(leaving[0]), "a draining node takes no new work");
        assert_eq!(loss_reason(leaving[0]), None, "but what runs there goes on");
        let id = leaving[0].id.clone();
        let drained = ProvisionerCommand::NodeDrained {
            node_id: id.clone(),
            forced: false,
            now: 6,
        };
        let (_, seen_after) = run(&[commands, vec![drained]].concat());
        let loss = seen_after[seen.len()..]
            .iter()
            .find_map(|(b, e, a)| loss_by("t", e, b.as_ref(), a.as_ref()))
            .expect("terminated once drained");
        assert_eq!(loss.reason, format!("node {id} is terminated (scale_down)"));
    }

    #[test]
    fn an_evicting_drain_and_a_forced_one_are_losses() {
        let mut commands = three_active("evict");
        commands.push(ProvisionerCommand::Resize { nodes: 2, now: 5 });
        let (_, seen) = run(&commands);
        let loss = seen
            .iter()
            .find_map(|(b, e, a)| loss_by("d", e, b.as_ref(), a.as_ref()))
            .expect("evicted");
        assert!(
            loss.reason
                .contains("is drained, evicting its work (scale_down)"),
            "{}",
            loss.reason
        );

        let mut commands = three_active("evict_after_timeout");
        commands.push(ProvisionerCommand::Resize { nodes: 2, now: 5 });
        let (pool, seen) = run(&commands);
        assert!(seen
            .iter()
            .all(|(b, e, a)| loss_by("x", e, b.as_ref(), a.as_ref()).is_none()));
        let draining = pool
            .state()
            .unwrap()
            .nodes
            .values()
            .find(|n| n.status == NodeStatus::Draining)
            .unwrap()
            .id
            .clone();
        let event = ProvisionerEvent::NodeDrained {
            node_id: draining.clone(),
            forced: true,
            at: 9,
        };
        let before = node_of(&pool, &event);
        let after = node_of(&pool.clone().evolve(&event), &event);
        let loss = loss_by("f", &event, before.as_ref(), after.as_ref()).unwrap();
        assert_eq!(
            loss.reason,
            format!("node {draining} evicted its work at the drain's deadline")
        );
    }

    /// Commands a pool of up to six nodes may get, in any order.
    fn any_command() -> impl Strategy<Value = ProvisionerCommand> {
        let node = (1..7u32).prop_map(|n| format!("gpu-{n}"));
        let now = 2..1_000u64;
        prop_oneof![
            (node.clone(), now.clone()).prop_map(|(n, now)| up(&n, now)[0].clone()),
            (node.clone(), now.clone()).prop_map(|(n, now)| up(&n, now)[1].clone()),
            (node.clone(), now.clone()).prop_map(|(n, now)| xid_79(&n, now)),
            (node.clone(), now.clone()).prop_map(|(n, now)| ProvisionerCommand::ReportHealth {
                node_id: n,
                now,
                verdict: Verdict::Unhealthy,
                action: HealthAction::ResetGpu,
                reasons: vec!["xid_gpu_reset:xid_48".into()],
            }),
            (node.clone(), now.clone()).prop_map(|(n, now)| ProvisionerCommand::ReportHealth {
                node_id: n,
                now,
                verdict: Verdict::Healthy,
                action: HealthAction::None,
                reasons: vec![],
            }),
            (node.clone(), any::<bool>(), now.clone()).prop_map(|(n, forced, now)| {
                ProvisionerCommand::NodeDrained {
                    node_id: n,
                    forced,
                    now,
                }
            }),
            (node.clone(), now.clone())
                .prop_map(|(n, now)| ProvisionerCommand::NodeTerminated { node_id: n, now }),
            (node, now.clone()).prop_map(|(n, now)| ProvisionerCommand::NodeProvisionFailed {
                node_id: n,
                error: "quota".into(),
                now,
            }),
            (1..5u32, now.clone())
                .prop_map(|(nodes, now)| ProvisionerCommand::Resize { nodes, now }),
            now.prop_map(|now| ProvisionerCommand::Tick {
                now,
                samples: vec![],
                heartbeats: BTreeMap::new(),
            }),
        ]
    }

    proptest! {
        /// Whatever happens to a pool: a ready node is one the provisioner
        /// has serving and not unhealthy, never a lost one; a node becomes
        /// lost by exactly one event until it is back in service; and
        /// choosing for attempts one after another keeps the ready nodes
        /// within one attempt of each other.
        #[test]
        fn ready_is_never_lost_losses_come_once_and_placement_balances(
            drain in prop_oneof![Just("evict"), Just("wait"), Just("evict_after_timeout")],
            commands in proptest::collection::vec(any_command(), 0..60),
            attempts in 0..40usize,
        ) {
            let (pool, seen) = run(&[vec![apply(drain)], commands].concat());
            let state = pool.state().unwrap();
            let ready = ready_nodes(state);
            for id in &ready {
                let n = &state.nodes[id.as_str()];
                prop_assert!(n.status.serving() && n.health != Verdict::Unhealthy, "{n:?}");
                prop_assert!(loss_reason(n).is_none(), "{n:?}");
            }
            // Nodes lost by their state (a forced drain is a loss the state
            // does not keep: its node is lost again once terminated).
            let mut lost: BTreeSet<String> = BTreeSet::new();
            for (i, (b, e, a)) in seen.iter().enumerate() {
                if let Some(n) = a.as_ref().filter(|n| loss_reason(n).is_none()) {
                    lost.remove(&n.id);
                }
                let Some(loss) = loss_by(&i.to_string(), e, b.as_ref(), a.as_ref()) else { continue };
                prop_assert!(loss.reason.contains(&loss.node), "{loss:?}");
                let forced = matches!(e, ProvisionerEvent::NodeDrained { forced: true, .. });
                if !forced {
                    prop_assert!(lost.insert(loss.node.clone()), "lost twice: {loss:?}");
                }
            }
            let mut load: BTreeMap<&str, usize> = BTreeMap::new();
            for _ in 0..attempts {
                match choose_node(&ready, &load) {
                    Some(node) => {
                        prop_assert!(ready.iter().any(|r| r == node));
                        *load.entry(node).or_default() += 1;
                    }
                    None => prop_assert!(ready.is_empty()),
                }
            }
            if attempts > 0 && !ready.is_empty() {
                let counts: Vec<usize> = ready.iter().map(|r| load.get(r.as_str()).copied().unwrap_or(0)).collect();
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(max - min <= 1, "{counts:?}");
            }
        }
    }
}
