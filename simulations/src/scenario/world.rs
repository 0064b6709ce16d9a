//! The simulated world a scenario runs in: pools, their nodes' agents, a
//! cloud, and a clock that jumps.
//!
//! What is real: each pool is the provisioner's pool aggregate (`decide`
//! then `evolve`, exactly as the host runs them), each node runs a real
//! [`HealthAgent`] over simulated GPUs ([`SimSource`]), and agents' messages
//! become pool commands through the provisioner service's own translation
//! ([`command_for`]). What is simulated is everything with I/O: the cloud
//! (provisioning takes a while and may fail, drains and terminations take a
//! while), the network (an agent can fall silent) and time.
//!
//! # Work proportional to what happens
//!
//! A pool of 50,000 quiet nodes must not cost 50,000 agent steps every
//! ten virtual seconds. Two facts make that safe:
//!
//! - an agent whose GPUs are nominal and whose last verdict was healthy
//!   reports exactly what it reported before, and the pool ignores such a
//!   repeat (`report_changes_nothing`); so an agent is stepped only while
//!   something is going on — from a fault until its verdict is healthy and
//!   the policy's windows (thermal `of`, recovery `probation`) have passed;
//! - the pool's tick only acts on heartbeats older than the timeout, so a
//!   tick lists only the agents that fell silent (every other agent is
//!   heard at every step).
//!
//! # Determinism
//!
//! Nothing here reads a clock or an unseeded random source; scheduled
//! happenings are ordered by (time, sequence number) and every map that is
//! iterated is ordered. Each event is hashed as it is recorded (MessagePack
//! of `(pool, at, event)`, the log's own encoding), so a run's log hash is a
//! fingerprint of everything that happened.

use flotilla_health::{FaultKind, FaultQueue, HealthAgent, HealthPolicy, SimSource};
use flotilla_host::Aggregate;
use flotilla_messages::fleet::PoolConfig;
use flotilla_messages::health::Verdict;
use flotilla_messages::provisioner::{ProvisionerCommand, ProvisionerEvent, SignalSample};
use flotilla_messages::Rejection;
use flotilla_provisioner::command_for;
use flotilla_provisioner::{Node, NodeStatus, Pool};
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

/// How the simulated cloud treats one requested node.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisioning {
    /// From the request to the provider's answer, ms.
    pub delay_ms: u64,
    /// From created to the agent's first heartbeat, ms.
    pub boot_ms: u64,
    /// GPUs on the node.
    pub gpus: u32,
    /// The provider's error, when it fails.
    pub error: Option<String>,
}

/// The cloud's side of provisioning, decided by the scenario (where the
/// node goes, how long it takes to start, whether an outage stops it).
pub trait CloudModel {
    /// What happens to `node_id`, requested at `now` (replacing `replaces`).
    fn provision(
        &mut self,
        pool: usize,
        node_id: &str,
        replaces: Option<&str>,
        now: u64,
    ) -> Provisioning;
}

/// Timings of the simulated world, ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Virtual time per step (the agents' interval and the pools' tick).
    pub step_ms: u64,
    /// How long a drain takes.
    pub drain_ms: u64,
    /// How long a termination takes.
    pub terminate_ms: u64,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The pool's index.
    pub pool: usize,
    /// Virtual ms.
    pub at: u64,
    /// The event.
    pub event: ProvisionerEvent,
}

struct SimAgent {
    agent: HealthAgent,
    faults: FaultQueue,
    /// Heartbeating (false: its network is down or it died).
    heard: bool,
    /// Stepped until at least this time.
    busy_until: u64,
    verdict: Verdict,
}

enum Due {
    Command(usize, ProvisionerCommand),
    Boot(String, u32),
}

/// The world: pools, agents, the cloud's pending work, the clock.
pub struct World {
    now: u64,
    timings: Timings,
    /// Steps an agent keeps being stepped after its last fault.
    settle_ms: u64,
    policy: HealthPolicy,
    names: Vec<String>,
    pools: Vec<Pool>,
    pool_of: HashMap<String, usize>,
    agents: BTreeMap<String, SimAgent>,
    busy: BTreeSet<String>,
    silent: BTreeMap<String, u64>,
    signals: Vec<Option<SignalSample>>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    due: HashMap<u64, Due>,
    seq: u64,
    hasher: Sha256,
    events: u64,
    fresh: Vec<Recorded>,
}

impl World {
    /// A world of `pools` (not yet created: see [`World::start`]).
    pub fn new(pools: &[PoolConfig], policy: HealthPolicy, timings: Timings) -> Self {
        let windows = policy.thermal.of.max(policy.recovery.probation) as u64 + 2;
        World {
            now: 0,
            timings,
            settle_ms: windows * timings.step_ms,
            policy,
            names: pools.iter().map(|p| p.name.clone()).collect(),
            pools: vec![Pool::default(); pools.len()],
            pool_of: HashMap::new(),
            agents: BTreeMap::new(),
            busy: BTreeSet::new(),
            silent: BTreeMap::new(),
            signals: vec![None; pools.len()],
            queue: BinaryHeap::new(),
            due: HashMap::new(),
            seq: 0,
            hasher: Sha256::new(),
            events: 0,
            fresh: Vec::new(),
        }
    }

    /// Creates the pools now (the scenario's `start_fleet`).
    pub fn start(
        &mut self,
        configs: &[PoolConfig],
        cloud: &mut dyn CloudModel,
    ) -> Result<(), Rejection> {
        for (i, config) in configs.iter().enumerate() {
            let now = self.now;
            self.command(
                i,
                ProvisionerCommand::ApplyPool {
                    config: Box::new(config.clone()),
                    now,
                },
                cloud,
            )?;
        }
        Ok(())
    }

    /// The virtual clock, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The pools' names, by index.
    pub fn pool_names(&self) -> &[String] {
        &self.names
    }

    /// A pool by index.
    pub fn pool(&self, index: usize) -> &Pool {
        &self.pools[index]
    }

    /// Which pool a node is in.
    pub fn pool_of(&self, node_id: &str) -> Option<usize> {
        self.pool_of.get(node_id).copied()
    }

    /// A node by id.
    pub fn node(&self, node_id: &str) -> Option<&Node> {
        self.pools[self.pool_of(node_id)?].node(node_id)
    }

    /// Events recorded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The hash of the event log so far (hex SHA-256).
    pub fn log_hash(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Events recorded since the last call, in order.
    pub fn take_fresh(&mut self) -> Vec<Recorded> {
        std::mem::take(&mut self.fresh)
    }

    /// The demand a pool's autoscaler sees from now on.
    pub fn set_signal(&mut self, pool: usize, sample: Option<SignalSample>) {
        self.signals[pool] = sample;
    }

    /// Runs a command on a pool, records its events and schedules their effects.
    pub fn command(
        &mut self,
        pool: usize,
        command: ProvisionerCommand,
        cloud: &mut dyn CloudModel,
    ) -> Result<Vec<ProvisionerEvent>, Rejection> {
        let events = self.pools[pool].decide(&command)?;
        for event in &events {
            self.pools[pool] = std::mem::take(&mut self.pools[pool]).evolve(event);
            self.record(pool, event);
            self.effect(pool, event, cloud);
        }
        Ok(events)
    }

    fn record(&mut self, pool: usize, event: &ProvisionerEvent) {
        let bytes =
            rmp_serde::to_vec(&(&self.names[pool], self.now, event)).expect("events always encode");
        self.hasher.update(&bytes);
        self.events += 1;
        self.fresh.push(Recorded {
            pool,
            at: self.now,
            event: event.clone(),
        });
    }

    fn later(&mut self, delay: u64, what: Due) {
        self.seq += 1;
        self.due.insert(self.seq, what);
        self.queue.push(Reverse((self.now + delay, self.seq)));
    }

    /// What the simulated cloud does about an event (the provider effects).
    fn effect(&mut self, pool: usize, event: &ProvisionerEvent, cloud: &mut dyn CloudModel) {
        use ProvisionerCommand as C;
        use ProvisionerEvent as E;
        let t = self.timings;
        match event {
            E::NodeRequested {
                node_id, replaces, ..
            } => {
                self.pool_of.insert(node_id.clone(), pool);
                let p = cloud.provision(pool, node_id, replaces.as_deref(), self.now);
                let at = self.now + p.delay_ms;
                let outcome = match p.error {
                    Some(error) => C::NodeProvisionFailed {
                        node_id: node_id.clone(),
                        error,
                        now: at,
                    },
                    None => {
                        self.later(p.delay_ms + p.boot_ms, Due::Boot(node_id.clone(), p.gpus));
                        C::NodeProvisioned {
                            node_id: node_id.clone(),
                            instance_id: format!("sim-{node_id}"),
                            registered: false,
                            now: at,
                        }
                    }
                };
                self.later(p.delay_ms, Due::Command(pool, outcome));
            }
            E::NodeDrainStarted { node_id, .. } => {
                let drained = C::NodeDrained {
                    node_id: node_id.clone(),
                    forced: false,
                    now: self.now + t.drain_ms,
                };
                self.later(t.drain_ms, Due::Command(pool, drained));
            }
            E::NodeTerminationRequested { node_id, .. } => {
                let gone = C::NodeTerminated {
                    node_id: node_id.clone(),
                    now: self.now + t.terminate_ms,
                };
                self.later(t.terminate_ms, Due::Command(pool, gone));
            }
            E::NodeTerminated { node_id, .. } | E::NodeFailed { node_id, .. } => {
                self.agents.remove(node_id);
                self.busy.remove(node_id);
                self.silent.remove(node_id);
            }
            _ => {}
        }
    }

    /// Injects a GPU fault into a node now; `lasting` is how long its
    /// effect can last (`None`: until recovered).
    pub fn inject(&mut self, node_id: &str, fault: FaultKind, lasting: Option<u64>) -> bool {
        let now = self.now;
        let settle = self.settle_ms;
        let Some(a) = self.agents.get_mut(node_id) else {
            return false;
        };
        a.faults.inject_now(fault, now);
        a.busy_until = match lasting {
            Some(ms) => a.busy_until.max(now + ms + settle),
            None => u64::MAX,
        };
        self.busy.insert(node_id.to_string());
        true
    }

    /// Silences a node's agent (network down, or dead when it never comes back).
    pub fn silence(&mut self, node_id: &str) -> bool {
        let now = self.now;
        let Some(a) = self.agents.get_mut(node_id).filter(|a| a.heard) else {
            return false;
        };
        a.heard = false;
        self.busy.remove(node_id);
        self.silent.insert(node_id.to_string(), now);
        true
    }

    /// Ends a node's lasting faults and brings its agent back.
    pub fn recover(&mut self, node_id: &str) -> bool {
        let now = self.now;
        let settle = self.settle_ms;
        let Some(a) = self.agents.get_mut(node_id) else {
            return false;
        };
        a.faults.end_all(now);
        a.heard = true;
        a.busy_until = now + settle;
        self.silent.remove(node_id);
        self.busy.insert(node_id.to_string());
        true
    }

    /// Whether a node has a running agent that is heard.
    pub fn heard(&self, node_id: &str) -> bool {
        self.agents.get(node_id).is_some_and(|a| a.heard)
    }

    /// Advances to `until` step by step: due cloud outcomes, agents, ticks.
    pub fn advance_to(&mut self, until: u64, cloud: &mut dyn CloudModel) -> Result<(), Rejection> {
        while self.now + self.timings.step_ms <= until {
            self.now += self.timings.step_ms;
            self.run_due(cloud)?;
            self.step_agents(cloud)?;
            self.tick(cloud)?;
        }
        Ok(())
    }

    fn run_due(&mut self, cloud: &mut dyn CloudModel) -> Result<(), Rejection> {
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > self.now {
                break;
            }
            self.queue.pop();
            match self.due.remove(&seq) {
                Some(Due::Command(pool, command)) => {
                    // An outcome about a node that left meanwhile is refused: fine.
                    let _ = self.command(pool, command, cloud);
                }
                Some(Due::Boot(node_id, gpus)) => self.boot(node_id, gpus),
                None => {}
            }
        }
        Ok(())
    }

    fn boot(&mut self, node_id: String, gpus: u32) {
        if self.node(&node_id).is_none_or(|n| n.status.gone()) {
            return;
        }
        let faults = FaultQueue::default();
        let source = SimSource::new(gpus, faults.clone());
        let agent = HealthAgent::new(&node_id, Ok(Box::new(source)), self.policy.clone());
        self.agents.insert(
            node_id.clone(),
            SimAgent {
                agent,
                faults,
                heard: true,
                busy_until: self.now + self.settle_ms,
                verdict: Verdict::Healthy,
            },
        );
        self.busy.insert(node_id);
    }

    fn step_agents(&mut self, cloud: &mut dyn CloudModel) -> Result<(), Rejection> {
        let now = self.now;
        let mut commands = Vec::new();
        let mut settled = Vec::new();
        for node_id in &self.busy {
            let Some(a) = self.agents.get_mut(node_id) else {
                continue;
            };
            let pool = self.pool_of[node_id];
            let status = self.pools[pool]
                .node(node_id)
                .map_or("gone", |n| n.status.as_str());
            for message in a.agent.step(now) {
                commands.extend(command_for(&message, status, now).map(|c| (pool, c)));
            }
            a.verdict = a.agent.status().verdict.unwrap_or(Verdict::Healthy);
            if a.verdict == Verdict::Healthy && now >= a.busy_until && status != "registering" {
                settled.push(node_id.clone());
            }
        }
        for id in settled {
            self.busy.remove(&id);
        }
        for (pool, c) in commands {
            // A report about a node that left meanwhile is refused: fine.
            let _ = self.command(pool, c, cloud);
        }
        Ok(())
    }

    fn tick(&mut self, cloud: &mut dyn CloudModel) -> Result<(), Rejection> {
        for pool in 0..self.pools.len() {
            if self.pools[pool].state().is_none() {
                continue;
            }
            let heartbeats = self
                .silent
                .iter()
                .filter(|(id, _)| self.pool_of.get(*id) == Some(&pool))
                .map(|(id, at)| (id.clone(), *at))
                .collect();
            let now = self.now;
            let samples = self.signals[pool]
                .map(|s| SignalSample { at: now, ..s })
                .into_iter()
                .collect();
            self.command(
                pool,
                ProvisionerCommand::Tick {
                    now,
                    samples,
                    heartbeats,
                },
                cloud,
            )?;
        }
        Ok(())
    }

    /// Nodes of a pool in `status`.
    pub fn count(&self, pool: usize, status: NodeStatus) -> u32 {
        self.pools[pool].state().map_or(0, |s| s.count(status))
    }
}
