//! Indices over a pool's nodes, so that a command's work is proportional
//! to what it changes, not to the size of the pool.
//!
//! Every question the reconciliation pass and the tick ask ("which serving
//! nodes reached the unhealthy threshold?", "how many nodes are live?",
//! "which drains are due?") is answered from a set or a counter kept here,
//! updated for each node an event touches. The sets are persistent
//! ([`imbl::OrdSet`]), so a decision's working copy of the state costs
//! O(1) to take and O(log n) per change — a pool of 50,000 nodes decides
//! as fast as one of 5.
//!
//! The index is derived data: it is never serialized, and a state read
//! back from a snapshot rebuilds it ([`NodeIndex::build`]). Sets iterate in
//! node-id order, the order the full scans they replace used, so the
//! events a command decides are exactly the same.

use super::{Node, NodeStatus};
use flotilla_messages::health::{HealthAction, Verdict};
use flotilla_messages::provisioner::RemovalReason;
use imbl::{OrdMap, OrdSet};
use std::cmp::Reverse;
use std::sync::Arc;

/// The key that orders scale-down candidates: registering first, then
/// degraded, then the newest (and, among equals, the highest id).
pub(super) type SurplusKey = (u8, Reverse<u64>, Reverse<Arc<str>>);

/// Sets and counters over the nodes, kept in step with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct NodeIndex {
    /// Nodes by status.
    counts: [u32; NodeStatus::ALL.len()],
    /// Nodes that count toward the pool's size.
    pub live: u32,
    /// Nodes not yet gone.
    pub present: u32,
    /// Serving nodes whose consecutive unhealthy evaluations reached the
    /// threshold: due to be taken out.
    pub due: OrdSet<Arc<str>>,
    /// Those of `due` whose verdict asks for a GPU reset (the only ones
    /// that act while the circuit breaker is open).
    pub due_reset: OrdSet<Arc<str>>,
    /// Cordoned for a GPU reset, by when (they come back, or time out).
    pub resetting: OrdSet<(u64, Arc<str>)>,
    /// Taken out for a fault, with no replacement on its way.
    pub awaiting: OrdSet<Arc<str>>,
    /// Draining, not yet empty (drain deadlines).
    pub draining: OrdSet<Arc<str>>,
    /// Drained and free to go: its replacement is up, or it needs none.
    pub drained_ready: OrdSet<Arc<str>>,
    /// Drained after a fault, no replacement asked for yet (terminated
    /// first only when the pool has no room to make one).
    pub drained_waiting: OrdSet<Arc<str>>,
    /// Provisioned, waiting for the agent (registration deadlines).
    pub registering: OrdSet<Arc<str>>,
    /// Scale-down candidates, best first.
    pub surplus: OrdSet<SurplusKey>,
}

impl NodeIndex {
    /// The index of `nodes` (after a snapshot is read, or the threshold changed).
    pub fn build(nodes: &OrdMap<Arc<str>, Arc<Node>>, threshold: u32) -> Self {
        let mut index = NodeIndex::default();
        for (id, node) in nodes {
            index.count(node, 1);
            index.insert(id, node, nodes, threshold);
        }
        index
    }

    /// Nodes in `status`.
    pub fn count_of(&self, status: NodeStatus) -> u32 {
        self.counts[status as usize]
    }

    /// Re-files node `id` after a change from `before` (`None`: it is new).
    pub fn refile(
        &mut self,
        id: &Arc<str>,
        before: Option<&Node>,
        nodes: &OrdMap<Arc<str>, Arc<Node>>,
        threshold: u32,
    ) {
        if let Some(old) = before {
            self.count(old, -1);
            self.remove(id, old);
        }
        if let Some(now) = nodes.get(id) {
            self.count(now, 1);
            self.insert(id, now, nodes, threshold);
        }
    }

    fn count(&mut self, n: &Node, delta: i32) {
        let add = |c: &mut u32| *c = c.saturating_add_signed(delta);
        add(&mut self.counts[n.status as usize]);
        if n.is_live() {
            add(&mut self.live);
        }
        if !n.status.gone() {
            add(&mut self.present);
        }
    }

    fn remove(&mut self, id: &Arc<str>, old: &Node) {
        for set in [
            &mut self.due,
            &mut self.due_reset,
            &mut self.awaiting,
            &mut self.draining,
            &mut self.drained_ready,
            &mut self.drained_waiting,
            &mut self.registering,
        ] {
            set.remove(id);
        }
        self.resetting
            .remove(&(old.cordoned_at.unwrap_or(0), id.clone()));
        self.surplus.remove(&surplus_key(id, old));
    }

    fn insert(
        &mut self,
        id: &Arc<str>,
        n: &Node,
        nodes: &OrdMap<Arc<str>, Arc<Node>>,
        threshold: u32,
    ) {
        let file = |set: &mut OrdSet<Arc<str>>, member: bool| {
            if member {
                set.insert(id.clone());
            }
        };
        let due = n.status.serving()
            && n.health == Verdict::Unhealthy
            && n.consecutive_unhealthy >= threshold;
        file(&mut self.due, due);
        file(
            &mut self.due_reset,
            due && n.action == HealthAction::ResetGpu,
        );
        if n.status == NodeStatus::Cordoned && n.removal == Some(RemovalReason::GpuReset) {
            self.resetting
                .insert((n.cordoned_at.unwrap_or(0), id.clone()));
        }
        file(&mut self.awaiting, awaits_replacement(n, nodes));
        let drain_done = n.drain.as_ref().map(|d| d.done);
        file(
            &mut self.draining,
            n.status == NodeStatus::Draining && drain_done == Some(false),
        );
        if n.status == NodeStatus::Draining && drain_done == Some(true) {
            let replacement = n.replaced_by.as_ref().and_then(|r| nodes.get(r.as_str()));
            match replacement {
                Some(r) => file(&mut self.drained_ready, r.registered_at.is_some()),
                None if n.removal == Some(RemovalReason::Unhealthy) => {
                    file(&mut self.drained_waiting, true)
                }
                None => file(&mut self.drained_ready, true),
            }
        }
        file(&mut self.registering, n.status == NodeStatus::Registering);
        if n.status == NodeStatus::Registering || n.status.serving() {
            self.surplus.insert(surplus_key(id, n));
        }
    }
}

/// Taken out for a fault, and its replacement is missing or failed before
/// it ever registered.
pub(super) fn awaits_replacement(n: &Node, nodes: &OrdMap<Arc<str>, Arc<Node>>) -> bool {
    if n.removal != Some(RemovalReason::Unhealthy) || n.drain.is_none() {
        return false;
    }
    match n.replaced_by.as_ref().and_then(|r| nodes.get(r.as_str())) {
        None => true,
        Some(r) => r.status.gone() && r.registered_at.is_none(),
    }
}

fn surplus_key(id: &Arc<str>, n: &Node) -> SurplusKey {
    let rank = match n.status {
        NodeStatus::Registering => 0,
        NodeStatus::Degraded => 1,
        _ => 2,
    };
    (rank, Reverse(n.requested_at), Reverse(id.clone()))
}
