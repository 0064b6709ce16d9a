//! The fleet simulator: one GPU node pool on virtual time.
//!
//! The real code runs here, unmodified: the pool aggregate's
//! `decide`/`evolve`, a real [`HealthAgent`] with a [`SimSource`] per node,
//! the health policy, and the same health-message → command translation
//! the provisioner's service uses ([`command_for`]). What is simulated is
//! the world around them: a cloud that provisions after a delay and fails
//! for a seeded share of node ids ([`sim_fails`]), drains that take a
//! while, agents that can die, and a clock that jumps.
//!
//! Every `step_ms` of virtual time: due provider outcomes are applied, each
//! live agent steps (heartbeat + report), and every `tick_ms` the pool
//! ticks with the heartbeat times the service would have observed. The run
//! records every event with its virtual time, so scenarios assert on the
//! order of things (cordon before drain, replacement requested before the
//! old node is terminated) and measure time-to-detect and time-to-replace.

use flotilla_health::HealthAgent;
use flotilla_health::HealthPolicy;
use flotilla_health::{FaultKind, FaultQueue, SimSource};
use flotilla_host::Aggregate;
use flotilla_messages::fleet::PoolConfig;
use flotilla_messages::provisioner::{ProvisionerCommand, ProvisionerEvent};
use flotilla_messages::Rejection;
use flotilla_provisioner::command_for;
use flotilla_provisioner::sim_fails;
use flotilla_provisioner::NodeStatus;
use flotilla_provisioner::Pool;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// The simulated world's settings.
#[derive(Debug, Clone)]
pub struct WorldSettings {
    /// Virtual time per step (agent interval).
    pub step_ms: u64,
    /// Pool tick interval.
    pub tick_ms: u64,
    /// How long provisioning takes.
    pub provision_ms: u64,
    /// From provisioned to the agent's first heartbeat.
    pub boot_ms: u64,
    /// How long a drain takes.
    pub drain_ms: u64,
    /// How long a termination takes.
    pub terminate_ms: u64,
    /// Share of node ids the cloud fails to provision.
    pub failure_rate: f64,
    /// Seeds the failures.
    pub seed: u64,
    /// GPUs per node.
    pub gpus: u32,
}

impl Default for WorldSettings {
    fn default() -> Self {
        WorldSettings {
            step_ms: 10_000,
            tick_ms: 10_000,
            provision_ms: 60_000,
            boot_ms: 30_000,
            drain_ms: 30_000,
            terminate_ms: 10_000,
            failure_rate: 0.0,
            seed: 0,
            gpus: 8,
        }
    }
}

/// A recorded event and its virtual time.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Virtual time, ms.
    pub at: u64,
    /// The event.
    pub event: ProvisionerEvent,
}

struct Agent {
    agent: HealthAgent,
    faults: FaultQueue,
    alive: bool,
}

/// A pool on virtual time.
pub struct FleetSim {
    /// Settings.
    pub settings: WorldSettings,
    pool: Pool,
    now: u64,
    last_tick: u64,
    policy: HealthPolicy,
    agents: BTreeMap<String, Agent>,
    heard: HashMap<String, u64>,
    outcomes: BinaryHeap<Reverse<(u64, u64)>>,
    pending: HashMap<u64, ProvisionerCommand>,
    next_outcome: u64,
    booting: Vec<(u64, String)>,
    /// Every event, in order.
    pub trace: Vec<Recorded>,
}

impl FleetSim {
    /// A world with `config`'s pool created at time 0.
    pub fn new(
        config: PoolConfig,
        settings: WorldSettings,
        policy: HealthPolicy,
    ) -> Result<Self, Rejection> {
        let mut sim = FleetSim {
            settings,
            pool: Pool::default(),
            now: 0,
            last_tick: 0,
            policy,
            agents: BTreeMap::new(),
            heard: HashMap::new(),
            outcomes: BinaryHeap::new(),
            pending: HashMap::new(),
            next_outcome: 0,
            booting: Vec::new(),
            trace: Vec::new(),
        };
        sim.command(ProvisionerCommand::ApplyPool {
            config: Box::new(config),
            now: 0,
        })?;
        Ok(sim)
    }

    /// The virtual clock, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs a command, records its events and schedules their effects.
    pub fn command(
        &mut self,
        command: ProvisionerCommand,
    ) -> Result<Vec<ProvisionerEvent>, Rejection> {
        let events = self.pool.decide(&command)?;
        for event in &events {
            self.pool = std::mem::take(&mut self.pool).evolve(event);
            self.trace.push(Recorded {
                at: self.now,
                event: event.clone(),
            });
            self.schedule_effect(event);
        }
        Ok(events)
    }

    fn later(&mut self, delay: u64, command: ProvisionerCommand) {
        self.next_outcome += 1;
        let due = self.now + delay;
        self.pending.insert(self.next_outcome, command);
        self.outcomes.push(Reverse((due, self.next_outcome)));
    }

    /// What the simulated cloud does about an event (the provider effects).
    fn schedule_effect(&mut self, event: &ProvisionerEvent) {
        let s = self.settings.clone();
        match event {
            ProvisionerEvent::NodeRequested { node_id, .. } => {
                let at = self.now + s.provision_ms;
                let outcome = if sim_fails(s.seed, node_id, s.failure_rate) {
                    ProvisionerCommand::NodeProvisionFailed {
                        node_id: node_id.clone(),
                        error: "sim: no capacity".into(),
                        now: at,
                    }
                } else {
                    self.booting.push((at + s.boot_ms, node_id.clone()));
                    ProvisionerCommand::NodeProvisioned {
                        node_id: node_id.clone(),
                        instance_id: format!("sim-{node_id}"),
                        registered: false,
                        now: at,
                    }
                };
                self.later(s.provision_ms, outcome);
            }
            ProvisionerEvent::NodeDrainStarted { node_id, .. } => {
                let at = self.now + s.drain_ms;
                self.later(
                    s.drain_ms,
                    ProvisionerCommand::NodeDrained {
                        node_id: node_id.clone(),
                        forced: false,
                        now: at,
                    },
                );
            }
            ProvisionerEvent::NodeTerminationRequested { node_id, .. } => {
                let at = self.now + s.terminate_ms;
                self.later(
                    s.terminate_ms,
                    ProvisionerCommand::NodeTerminated {
                        node_id: node_id.clone(),
                        now: at,
                    },
                );
            }
            ProvisionerEvent::NodeTerminated { node_id, .. }
            | ProvisionerEvent::NodeFailed { node_id, .. } => {
                self.agents.remove(node_id);
            }
            _ => {}
        }
    }

    /// Injects a fault into a node's simulated GPUs now.
    pub fn inject(&mut self, node_id: &str, fault: FaultKind) {
        if let Some(a) = self.agents.get(node_id) {
            a.faults.inject_now(fault, self.now);
        }
    }

    /// Kills a node's agent (the node stays, silent).
    pub fn kill_agent(&mut self, node_id: &str) {
        if let Some(a) = self.agents.get_mut(node_id) {
            a.alive = false;
        }
    }

    /// Advances virtual time by `ms`.
    pub fn run_for(&mut self, ms: u64) -> Result<(), Rejection> {
        let end = self.now + ms;
        while self.now < end {
            self.now += self.settings.step_ms;
            self.apply_due_outcomes()?;
            self.boot_agents();
            self.step_agents()?;
            if self.now >= self.last_tick + self.settings.tick_ms {
                self.last_tick = self.now;
                self.tick()?;
            }
        }
        Ok(())
    }

    fn apply_due_outcomes(&mut self) -> Result<(), Rejection> {
        while let Some(Reverse((due, id))) = self.outcomes.peek().cloned() {
            if due > self.now {
                break;
            }
            self.outcomes.pop();
            if let Some(command) = self.pending.remove(&id) {
                self.command(command)?;
            }
        }
        Ok(())
    }

    fn boot_agents(&mut self) {
        let now = self.now;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.booting.drain(..).partition(|(at, _)| *at <= now);
        self.booting = waiting;
        for (_, node_id) in ready {
            let faults = FaultQueue::default();
            let source = SimSource::new(self.settings.gpus, faults.clone());
            let agent = HealthAgent::new(&node_id, Ok(Box::new(source)), self.policy.clone());
            self.agents.insert(
                node_id,
                Agent {
                    agent,
                    faults,
                    alive: true,
                },
            );
        }
    }

    fn step_agents(&mut self) -> Result<(), Rejection> {
        let now = self.now;
        let mut commands = Vec::new();
        for (node_id, a) in self.agents.iter_mut().filter(|(_, a)| a.alive) {
            let status = self
                .pool
                .node(node_id)
                .map_or("gone", |n| n.status.as_str());
            match self.heard.get_mut(node_id) {
                Some(at) => *at = now,
                None => {
                    self.heard.insert(node_id.clone(), now);
                }
            }
            for message in a.agent.step(now) {
                commands.extend(command_for(&message, status, now));
            }
        }
        for c in commands {
            // A report about a node that left meanwhile is refused: fine.
            let _ = self.command(c);
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), Rejection> {
        let heartbeats = self
            .heard
            .iter()
            .filter(|(id, _)| self.pool.node(id).is_some_and(|n| !n.status.gone()))
            .map(|(id, at)| (id.clone(), *at))
            .collect();
        self.command(ProvisionerCommand::Tick {
            now: self.now,
            samples: vec![],
            heartbeats,
        })?;
        Ok(())
    }

    /// Nodes in `status`.
    pub fn nodes_in(&self, status: NodeStatus) -> Vec<String> {
        self.pool
            .state()
            .map(|s| {
                s.nodes
                    .values()
                    .filter(|n| n.status == status)
                    .map(|n| n.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Serving nodes (active or degraded).
    pub fn serving(&self) -> usize {
        self.pool.state().map_or(0, |s| s.serving().count())
    }

    /// The first recorded event after `from` matching `pred`.
    pub fn first(&self, from: u64, pred: impl Fn(&ProvisionerEvent) -> bool) -> Option<&Recorded> {
        self.trace.iter().find(|r| r.at >= from && pred(&r.event))
    }

    /// Events of type `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.trace
            .iter()
            .filter(|r| r.event.event_type() == kind)
            .count()
    }
}
