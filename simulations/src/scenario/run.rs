//! Plays a scenario on virtual time: its script, its chaos, its checks.
//!
//! Each step of `world.step` virtual time: the script's events that are
//! due run (in file order), then the chaos that is due (random failures at
//! `failure_rate` per minute per 1,000 serving nodes, cascades, correlated
//! failures, scheduled outages and recoveries), then the world advances
//! one step (cloud outcomes, agents, pool ticks). `wait_for_status` watches
//! until its status shows or its timeout passes; `assert` checks at once;
//! the `assertions` are checked at the end.
//!
//! Semantics where Navarch's format leaves room:
//! - pools start at the first `start_fleet` (at 0 when there is none), and
//!   `stop_fleet` ends the run there (the final assertions are checked then);
//! - `node_status: unhealthy` means the node's last verdict was unhealthy
//!   (Navarch's UNHEALTHY); `healthy` means serving with a healthy verdict;
//! - `node_count` counts serving nodes (active or degraded) of a pool or of
//!   `all`; a bare number means "at least" in a stress scenario and
//!   "exactly" otherwise (see `CountCheck`);
//! - `issue_command` maps `cordon`, `uncordon` and `drain` to the pool's
//!   operator commands, and `terminate` to a drain (the pool terminates
//!   what it drained); a refused command is a failed check;
//! - with no `pools:`, the fleet is one pool, `fleet`, of the fleet's size,
//!   with room for 10% replacements in flight.

use super::chaos::{ChaosDraws, FaultSpec};
use super::file::{
    Action, CascadeScope, CommandType, CorrelatedScope, CorrelationTrigger, Expected, FailureType,
    NodeStatusName, OutageScope, Scenario, DEFAULT_POOL,
};
use super::placement::ScenarioCloud;
use super::recorder::Recorder;
use super::report::{CheckResult, LogLine, SimReport};
use super::world::{Recorded, Timings, World};
use flotilla_messages::fleet::{PoolConfig, PoolsFile};
use flotilla_messages::health::Verdict;
use flotilla_messages::provisioner::{ProvisionerCommand, SignalSample};
use flotilla_messages::Rejection;
use flotilla_provisioner::{Node, NodeStatus};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A pool refused its configuration.
    #[error("pool {pool}: {rejection}")]
    Pool {
        /// The pool.
        pool: String,
        /// Why.
        rejection: Rejection,
    },
    /// The default pool could not be built.
    #[error("the fleet's pool: {0}")]
    DefaultPool(String),
}

/// What a run tells whoever watches it.
pub trait RunObserver {
    /// Virtual time has reached `now` of `end`, with `events` recorded.
    fn progress(&mut self, _now: u64, _end: u64, _events: u64) {}
    /// A line for the run's log.
    fn log(&mut self, _line: &LogLine) {}
    /// Events as they are recorded (tests look at their order).
    fn events(&mut self, _recorded: &[Recorded]) {}
}

/// An observer that watches nothing.
pub struct Quiet;
impl RunObserver for Quiet {}

/// Runs `scenario` with `seed`.
pub fn run(
    scenario: &Scenario,
    seed: u64,
    observer: &mut dyn RunObserver,
) -> Result<SimReport, RunError> {
    let started = Instant::now();
    let mut runner = Runner::new(scenario, seed)?;
    runner.play(observer)?;
    let mut report = runner.recorder.finish(&runner.world);
    report.scenario = scenario.name.clone();
    report.description = scenario.description.clone();
    report.seed = seed;
    report.wall_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Something scheduled for later.
enum Pending {
    /// A chaos fault: on `node`, or on a node near it (`near`).
    Fault {
        node: String,
        near: Option<&'static str>,
        kind: FailureType,
        chain: Option<(u64, u32)>,
    },
    /// A silenced node comes back.
    Recover(String),
    /// A scheduled outage starts.
    OutageStart(usize),
    /// A scheduled outage ends.
    OutageEnd(usize),
}

/// A `wait_for_status` in progress.
struct Watch {
    target: String,
    want: NodeStatusName,
    until: u64,
    from: u64,
}

/// Serving nodes, for uniform random picks in O(1).
#[derive(Default)]
struct Picker {
    nodes: Vec<String>,
    at: HashMap<String, usize>,
}

impl Picker {
    fn set(&mut self, id: &str, member: bool) {
        match (self.at.get(id).copied(), member) {
            (None, true) => {
                self.at.insert(id.to_string(), self.nodes.len());
                self.nodes.push(id.to_string());
            }
            (Some(i), false) => {
                self.at.remove(id);
                self.nodes.swap_remove(i);
                if let Some(moved) = self.nodes.get(i) {
                    self.at.insert(moved.clone(), i);
                }
            }
            _ => {}
        }
    }
}

struct Runner<'s> {
    scenario: &'s Scenario,
    configs: Vec<PoolConfig>,
    world: World,
    cloud: ScenarioCloud,
    recorder: Recorder,
    rng: ChaCha8Rng,
    step: u64,
    end: u64,
    started: bool,
    stopped: bool,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    pending: HashMap<u64, Pending>,
    seq: u64,
    watches: Vec<Watch>,
    serving: Picker,
    /// Nodes placed in each scope value (`zone=…`), present or not.
    scopes: HashMap<String, Vec<String>>,
    chain_hits: HashMap<u64, u32>,
    owed: f64,
    outage_nodes: HashMap<usize, Vec<String>>,
}

impl<'s> Runner<'s> {
    fn new(scenario: &'s Scenario, seed: u64) -> Result<Self, RunError> {
        let configs = pool_configs(scenario)?;
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        let w = &scenario.world;
        let timings = Timings {
            step_ms: w.step_ms,
            drain_ms: w.drain_time_ms,
            terminate_ms: w.terminate_time_ms,
        };
        let world = World::new(&configs, scenario.health_policy.clone(), timings);
        let initial = configs.iter().map(|c| c.min_nodes).collect();
        let cloud = ScenarioCloud::new(scenario, seed, &names, initial);
        Ok(Runner {
            scenario,
            recorder: Recorder::new(&names),
            configs,
            world,
            cloud,
            rng: ChaCha8Rng::seed_from_u64(seed),
            step: w.step_ms,
            end: scenario.duration_ms(),
            started: false,
            stopped: false,
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            seq: 0,
            watches: Vec::new(),
            serving: Picker::default(),
            scopes: HashMap::new(),
            chain_hits: HashMap::new(),
            owed: 0.0,
            outage_nodes: HashMap::new(),
        })
    }

    fn play(&mut self, observer: &mut dyn RunObserver) -> Result<(), RunError> {
        let has_start = self
            .scenario
            .events
            .iter()
            .any(|e| e.action == Action::StartFleet);
        if !has_start {
            self.start()?;
        }
        self.schedule_outages();
        let interval = self.metrics_interval();
        let (mut next_event, mut next_sample, mut t) = (0, 0, 0);
        loop {
            while let Some(e) = self
                .scenario
                .events
                .get(next_event)
                .filter(|e| e.at_ms <= t)
            {
                next_event += 1;
                self.script(e, observer)?;
            }
            self.run_pending(t, observer);
            self.chaos(t);
            self.check_watches(t);
            if t >= next_sample {
                self.recorder.sample(&self.world);
                next_sample = t + interval;
            }
            if t >= self.end || self.stopped {
                break;
            }
            self.signals(t);
            self.world
                .advance_to(t + self.step, &mut self.cloud)
                .map_err(|r| self.pool_error(0, r))?;
            t = self.world.now();
            self.observe(observer);
            if t % 60_000 < self.step {
                observer.progress(t, self.end, self.world.events());
            }
        }
        self.expire_watches();
        self.final_checks();
        observer.progress(t, self.end, self.world.events());
        Ok(())
    }

    fn metrics_interval(&self) -> u64 {
        let given = self
            .scenario
            .stress
            .as_ref()
            .map_or(0, |s| s.metrics_interval_ms);
        given.max(self.step)
    }

    fn pool_error(&self, pool: usize, rejection: Rejection) -> RunError {
        RunError::Pool {
            pool: self.configs[pool].name.clone(),
            rejection,
        }
    }

    fn start(&mut self) -> Result<(), RunError> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let configs = self.configs.clone();
        self.world
            .start(&configs, &mut self.cloud)
            .map_err(|r| self.pool_error(0, r))?;
        let fresh = self.world.take_fresh();
        self.absorb(&fresh);
        Ok(())
    }

    fn observe(&mut self, observer: &mut dyn RunObserver) {
        let fresh = self.world.take_fresh();
        observer.events(&fresh);
        self.absorb(&fresh);
    }

    /// Keeps the recorder, the serving picker and the scopes in step.
    fn absorb(&mut self, fresh: &[Recorded]) {
        self.recorder.observe(fresh);
        for r in fresh {
            let Some(id) = r.event.node_id() else {
                continue;
            };
            if let flotilla_messages::provisioner::ProvisionerEvent::NodeRequested { .. } = r.event
            {
                self.file_scopes(id);
            }
            let serving = self.world.node(id).is_some_and(|n| n.status.serving());
            self.serving.set(id, serving);
        }
    }

    fn file_scopes(&mut self, id: &str) {
        let Some(p) = self.cloud.placement(id) else {
            return;
        };
        for scope in ["rack", "zone", "region", "provider"] {
            let key = format!("{scope}={}", p.at(scope));
            self.scopes.entry(key).or_default().push(id.to_string());
        }
    }

    fn later(&mut self, at: u64, what: Pending) {
        self.seq += 1;
        self.pending.insert(self.seq, what);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn signals(&mut self, t: u64) {
        for (i, config) in self.configs.iter().enumerate() {
            let step = self.scenario.demand_at(&config.name, t);
            let sample = step.map(|d| SignalSample {
                at: t,
                utilization: d.utilization,
                pending: d.pending,
                running: d.running,
            });
            self.world.set_signal(i, sample);
        }
    }
}

// The script.
impl Runner<'_> {
    fn script(
        &mut self,
        e: &super::file::Event,
        observer: &mut dyn RunObserver,
    ) -> Result<(), RunError> {
        let t = e.at_ms;
        let target = e
            .target
            .as_deref()
            .map(|n| self.cloud.resolve(n).to_string());
        let p = &e.params;
        match e.action {
            Action::StartFleet => self.start()?,
            Action::StopFleet => self.stopped = true,
            Action::Wait => {}
            Action::Log => self.log(t, p.log_message.clone().unwrap_or_default(), observer),
            Action::InjectFailure => {
                let node = target.unwrap_or_default();
                let kind = p.failure_type.unwrap_or(FailureType::XidError);
                let fault = FaultSpec {
                    kind,
                    xid: p.xid_code.or((kind == FailureType::XidError).then_some(79)),
                    gpu: p.gpu_index.unwrap_or(0),
                    lasting: None,
                };
                if self.inject(&node, &fault, t) {
                    // With chaos on, a scripted failure sets off cascades
                    // and correlated failures like a random one.
                    self.cascade(t, &node, kind, None);
                    self.correlate(t, &node, &fault);
                } else {
                    let why = format!("inject_failure {node}: the node has no running agent");
                    self.log(t, why, observer);
                }
            }
            Action::RecoverFailure => {
                let node = target.unwrap_or_default();
                self.world.recover(&node);
            }
            Action::IssueCommand => {
                let node = target.unwrap_or_default();
                let command = p.command_type.unwrap_or(CommandType::Cordon);
                self.operator(t, &node, command);
            }
            Action::WaitForStatus => self.watches.push(Watch {
                target: target.unwrap_or_default(),
                want: p.expected_status.unwrap_or(NodeStatusName::Active),
                until: t + p.timeout_ms,
                from: t,
            }),
            Action::Assert => {
                let node = target.unwrap_or_default();
                let want = p.expected_status.unwrap_or(NodeStatusName::Active);
                let check = self.status_check(t, &node, want);
                self.recorder.check(check);
            }
        }
        Ok(())
    }

    fn log(&mut self, at_ms: u64, message: String, observer: &mut dyn RunObserver) {
        let line = LogLine { at_ms, message };
        observer.log(&line);
        self.recorder.log(line.at_ms, line.message);
    }

    fn operator(&mut self, t: u64, node: &str, command: CommandType) {
        let now = self.world.now();
        let node_id = node.to_string();
        let (name, cmd) = match command {
            CommandType::Cordon => ("cordon", ProvisionerCommand::CordonNode { node_id, now }),
            CommandType::Uncordon => (
                "uncordon",
                ProvisionerCommand::UncordonNode { node_id, now },
            ),
            CommandType::Drain => ("drain", ProvisionerCommand::DrainNode { node_id, now }),
            CommandType::Terminate => ("terminate", ProvisionerCommand::DrainNode { node_id, now }),
        };
        let pool = self.world.pool_of(node).unwrap_or(0);
        let outcome = self.world.command(pool, cmd, &mut self.cloud);
        let fresh = self.world.take_fresh();
        self.absorb(&fresh);
        if let Err(rejection) = outcome {
            self.recorder.check(CheckResult {
                at_ms: t,
                what: format!("issue_command {name} {}", self.shown(node)),
                expected: "accepted".into(),
                seen: format!("refused: {}", rejection.message),
                passed: false,
            });
        }
    }

    fn check_watches(&mut self, t: u64) {
        let mut open = Vec::new();
        for w in std::mem::take(&mut self.watches) {
            let check = self.status_check(t, &w.target, w.want);
            if check.passed {
                self.recorder.check(CheckResult {
                    what: format!(
                        "wait_for_status {} (from {})",
                        watched(&check.what),
                        clock(w.from)
                    ),
                    ..check
                });
            } else if t >= w.until {
                self.recorder.check(CheckResult {
                    what: format!("wait_for_status {} (timed out)", watched(&check.what)),
                    ..check
                });
            } else {
                open.push(w);
            }
        }
        self.watches = open;
    }

    fn expire_watches(&mut self) {
        let t = self.world.now();
        for w in std::mem::take(&mut self.watches) {
            let check = self.status_check(t, &w.target, w.want);
            self.recorder.check(CheckResult {
                what: format!(
                    "wait_for_status {} (the run ended first)",
                    watched(&check.what)
                ),
                passed: check.passed,
                ..check
            });
        }
    }

    fn shown(&self, node: &str) -> String {
        match self.cloud.alias_of(node) {
            Some(alias) if alias != node => format!("{alias} ({node})"),
            _ => node.to_string(),
        }
    }

    fn status_check(&self, t: u64, target: &str, want: NodeStatusName) -> CheckResult {
        let nodes = self.targets(target);
        let failing: Vec<String> = nodes
            .iter()
            .filter(|n| !status_matches(n, want))
            .map(|n| format!("{} is {}", self.shown(&n.id), describe(n)))
            .collect();
        let seen = match (nodes.len(), failing.first()) {
            (0, _) => "no such node".to_string(),
            (1, None) => describe(nodes[0]),
            (_, None) => format!("all {} {}", nodes.len(), name_of(want)),
            (n, Some(first)) => format!("{} of {n} not {}: {first}", failing.len(), name_of(want)),
        };
        let shown = if target == "all" {
            "all".into()
        } else {
            self.shown(target)
        };
        CheckResult {
            at_ms: t,
            what: format!("node_status {shown}"),
            expected: name_of(want).to_string(),
            passed: !nodes.is_empty() && failing.is_empty(),
            seen,
        }
    }

    /// The nodes `target` names: one node, every present node of a pool,
    /// or of `all`.
    fn targets(&self, target: &str) -> Vec<&Node> {
        let pools: Vec<usize> = match target {
            "all" => (0..self.configs.len()).collect(),
            name => match self.configs.iter().position(|c| c.name == name) {
                Some(i) => vec![i],
                None => return self.world.node(target).into_iter().collect(),
            },
        };
        pools
            .into_iter()
            .filter_map(|i| self.world.pool(i).state())
            .flat_map(|s| s.nodes.values().filter(|n| !n.status.gone()).map(|n| &**n))
            .collect()
    }

    fn final_checks(&mut self) {
        let t = self.world.now();
        for a in &self.scenario.assertions {
            let target = self.cloud.resolve(&a.target).to_string();
            let check = match a.expected {
                Expected::NodeStatus(want) => self.status_check(t, &target, want),
                Expected::Health(want) => {
                    let want = match want {
                        super::file::HealthName::Healthy => NodeStatusName::Healthy,
                        super::file::HealthName::Degraded => NodeStatusName::Degraded,
                        super::file::HealthName::Unhealthy => NodeStatusName::Unhealthy,
                    };
                    let health = self.health_check(t, &target, want);
                    CheckResult {
                        what: health.what.replacen("node_status", "health_status", 1),
                        ..health
                    }
                }
                Expected::Breaker(want) => self.breaker_check(t, &a.target, want),
                Expected::Count(count) => {
                    let serving = self.serving_in(&target);
                    CheckResult {
                        at_ms: t,
                        what: format!("node_count {}", a.target),
                        expected: format!("{count} serving"),
                        seen: format!("{serving} serving"),
                        passed: count.holds(u64::from(serving)),
                    }
                }
            };
            self.recorder.check(check);
        }
    }

    /// A health check looks at verdicts, whatever the status.
    fn health_check(&self, t: u64, target: &str, want: NodeStatusName) -> CheckResult {
        let want_verdict = match want {
            NodeStatusName::Unhealthy => Verdict::Unhealthy,
            NodeStatusName::Degraded => Verdict::Degraded,
            _ => Verdict::Healthy,
        };
        let nodes = self.targets(target);
        let failing = nodes.iter().filter(|n| n.health != want_verdict).count();
        let seen = match nodes.as_slice() {
            [] => "no such node".to_string(),
            [one] => one.health.as_str().to_string(),
            many => format!(
                "{} of {} {}",
                many.len() - failing,
                many.len(),
                want_verdict.as_str()
            ),
        };
        CheckResult {
            at_ms: t,
            what: format!("node_status {}", self.shown(target)),
            expected: want_verdict.as_str().to_string(),
            passed: !nodes.is_empty() && failing == 0,
            seen,
        }
    }

    /// `tripped` looks back over the run; `open` and `closed` at the end.
    fn breaker_check(&self, t: u64, target: &str, want: super::file::BreakerName) -> CheckResult {
        use super::file::BreakerName as B;
        let pools: Vec<usize> = match self.configs.iter().position(|c| c.name == target) {
            Some(i) => vec![i],
            None => (0..self.configs.len()).collect(),
        };
        let open = pools
            .iter()
            .filter_map(|i| self.world.pool(*i).state())
            .any(|s| s.breaker_open_since.is_some());
        let tripped = pools.iter().any(|i| self.recorder.breaker_tripped(*i));
        let (expected, passed) = match want {
            B::Open => ("open", open),
            B::Closed => ("closed", !open),
            B::Tripped => ("tripped during the run", tripped),
        };
        let seen = match (open, tripped) {
            (true, _) => "open",
            (false, true) => "closed (tripped during the run)",
            (false, false) => "closed (never tripped)",
        };
        CheckResult {
            at_ms: t,
            what: format!("circuit_breaker {target}"),
            expected: expected.into(),
            seen: seen.into(),
            passed,
        }
    }

    fn serving_in(&self, target: &str) -> u32 {
        let pools: Vec<usize> = match self.configs.iter().position(|c| c.name == target) {
            Some(i) => vec![i],
            None => (0..self.configs.len()).collect(),
        };
        pools
            .into_iter()
            .filter_map(|i| self.world.pool(i).state())
            .map(|s| s.serving_count())
            .sum()
    }
}

// Chaos.
impl<'s> Runner<'s> {
    fn chaos(&mut self, t: u64) {
        let Some(chaos) = self.chaos_config() else {
            return;
        };
        if !self.started || self.serving.nodes.is_empty() {
            return;
        }
        let per_step = chaos.failure_rate * self.serving.nodes.len() as f64 / 1000.0
            * self.step as f64
            / 60_000.0;
        self.owed += per_step;
        while self.owed >= 1.0 {
            self.owed -= 1.0;
            let Some(node) = self.serving.nodes.choose(&mut self.rng).cloned() else {
                break;
            };
            let kind = ChaosDraws {
                config: chaos,
                rng: &mut self.rng,
            }
            .kind();
            self.chaos_fault(t, &node, kind, None);
        }
    }

    fn chaos_config(&self) -> Option<&'s super::file::ChaosConfig> {
        let scenario: &'s Scenario = self.scenario;
        let chaos = scenario.stress.as_ref()?.chaos.as_ref()?;
        chaos.enabled.then_some(chaos)
    }

    /// A drawn fault of `kind` on `node`, and what it sets off.
    fn chaos_fault(&mut self, t: u64, node: &str, kind: FailureType, chain: Option<(u64, u32)>) {
        let Some(chaos) = self.chaos_config() else {
            return;
        };
        let gpus = self.cloud.placement(node).map_or(8, |p| p.gpus);
        let fault = ChaosDraws {
            config: chaos,
            rng: &mut self.rng,
        }
        .fault(kind, gpus);
        if !self.inject(node, &fault, t) {
            return;
        }
        self.cascade(t, node, kind, chain);
        self.correlate(t, node, &fault);
    }

    /// Applies a fault, records it, and schedules the node's comeback.
    fn inject(&mut self, node: &str, fault: &FaultSpec, t: u64) -> bool {
        if !fault.apply(&mut self.world, node) {
            return false;
        }
        let pool = self.world.pool_of(node).unwrap_or(0);
        self.recorder.fault(pool, node, fault, t);
        let silenced = matches!(fault.kind, FailureType::Network | FailureType::BackendError);
        if let (true, Some(ms)) = (silenced, fault.lasting) {
            self.later(t + ms, Pending::Recover(node.to_string()));
        }
        true
    }

    fn cascade(&mut self, t: u64, node: &str, kind: FailureType, chain: Option<(u64, u32)>) {
        let Some(c) = self
            .chaos_config()
            .and_then(|c| c.cascading.as_ref())
            .filter(|c| c.enabled)
        else {
            return;
        };
        let (root, depth) = chain.unwrap_or((self.seq + 1, 0));
        if depth >= c.max_depth || !self.rng.random_bool(c.probability.clamp(0.0, 1.0)) {
            return;
        }
        let delay = self
            .rng
            .random_range(c.min_delay_ms..=c.max_delay_ms.max(c.min_delay_ms));
        let near = match c.scope {
            CascadeScope::Rack => Some("rack"),
            CascadeScope::Zone => Some("zone"),
            CascadeScope::Region => Some("region"),
            CascadeScope::Provider => Some("provider"),
            CascadeScope::Random => None,
        };
        let fault = Pending::Fault {
            node: node.to_string(),
            near,
            kind,
            chain: Some((root, depth + 1)),
        };
        self.later(t + delay, fault);
    }

    fn correlate(&mut self, t: u64, node: &str, fault: &FaultSpec) {
        let Some(chaos) = self.chaos_config() else {
            return;
        };
        for rule in &chaos.correlated_failures {
            let fires = match rule.trigger {
                CorrelationTrigger::Xid(code) => fault.xid == Some(code),
                CorrelationTrigger::Failure(kind) => fault.kind == kind,
            };
            if !fires || !self.rng.random_bool(rule.probability.clamp(0.0, 1.0)) {
                continue;
            }
            let near = match rule.scope {
                CorrelatedScope::SameNode => Some("node"),
                CorrelatedScope::SameRack => Some("rack"),
                CorrelatedScope::SameZone => Some("zone"),
                CorrelatedScope::Random => None,
            };
            // Correlated failures do not correlate again (no feedback loop).
            let fault = Pending::Fault {
                node: node.to_string(),
                near,
                kind: rule.response,
                chain: Some((u64::MAX, u32::MAX - 1)),
            };
            self.later(t + rule.delay_ms, fault);
        }
    }

    fn run_pending(&mut self, t: u64, observer: &mut dyn RunObserver) {
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > t {
                break;
            }
            self.queue.pop();
            match self.pending.remove(&seq) {
                Some(Pending::Fault {
                    node,
                    near,
                    kind,
                    chain,
                }) => self.fire(t, &node, near, kind, chain),
                Some(Pending::Recover(node)) => {
                    self.world.recover(&node);
                }
                Some(Pending::OutageStart(i)) => self.outage_start(t, i, observer),
                Some(Pending::OutageEnd(i)) => self.outage_end(t, i, observer),
                None => {}
            }
        }
    }

    /// A scheduled fault fires on its node or on a serving neighbour.
    fn fire(
        &mut self,
        t: u64,
        node: &str,
        near: Option<&str>,
        kind: FailureType,
        chain: Option<(u64, u32)>,
    ) {
        let victim = match near {
            Some("node") => Some(node.to_string()),
            Some(scope) => self.neighbour(node, scope, chain),
            None => self.serving.nodes.choose(&mut self.rng).cloned(),
        };
        let Some(victim) = victim.filter(|v| self.serving.at.contains_key(v)) else {
            return;
        };
        let next = match chain {
            Some((u64::MAX, _)) => Some((u64::MAX, u32::MAX)),
            other => other,
        };
        self.chaos_fault(t, &victim, kind, next);
    }

    /// A serving node in `node`'s scope other than `node`, within the
    /// cascade's `max_affected_percent` of that scope.
    fn neighbour(&mut self, node: &str, scope: &str, chain: Option<(u64, u32)>) -> Option<String> {
        let key = format!("{scope}={}", self.cloud.placement(node)?.at(scope));
        let members = self.scopes.get_mut(&key)?;
        let world = &self.world;
        members.retain(|m| world.node(m).is_some_and(|n| !n.status.gone()));
        let size = members.len();
        let candidates: Vec<&String> = members
            .iter()
            .filter(|m| *m != node && self.serving.at.contains_key(*m))
            .collect();
        let victim = (*candidates.choose(&mut self.rng)?).clone();
        if let (Some((root, _)), Some(c)) = (
            chain,
            self.chaos_config().and_then(|c| c.cascading.as_ref()),
        ) {
            let cap = (c.max_affected_percent * size as f64).ceil().max(1.0) as u32;
            let hits = self.chain_hits.entry(root).or_default();
            if c.max_affected_percent > 0.0 && *hits >= cap {
                return None;
            }
            *hits += 1;
        }
        Some(victim)
    }

    fn schedule_outages(&mut self) {
        let Some(chaos) = self.chaos_config() else {
            return;
        };
        let times: Vec<(u64, u64)> = chaos
            .scheduled_outages
            .iter()
            .map(|o| (o.start_time_ms, o.start_time_ms + o.duration_ms))
            .collect();
        for (i, (start, end)) in times.into_iter().enumerate() {
            self.later(start, Pending::OutageStart(i));
            self.later(end, Pending::OutageEnd(i));
        }
    }

    fn outage_start(&mut self, t: u64, i: usize, observer: &mut dyn RunObserver) {
        let Some(o) = self.chaos_config().map(|c| c.scheduled_outages[i].clone()) else {
            return;
        };
        let victims: Vec<String> = match o.scope {
            OutageScope::Percentage => {
                let share = o.target.trim().parse::<f64>().unwrap_or(0.0) / 100.0;
                let k = (self.serving.nodes.len() as f64 * share).round() as usize;
                let mut all = self.serving.nodes.clone();
                all.sort();
                all.choose_multiple(&mut self.rng, k).cloned().collect()
            }
            scope => {
                let scope = outage_scope(scope);
                let mut hit: Vec<String> = self
                    .serving
                    .nodes
                    .iter()
                    .filter(|n| {
                        self.cloud
                            .placement(n)
                            .is_some_and(|p| p.at(scope) == o.target)
                    })
                    .cloned()
                    .collect();
                hit.sort();
                if o.failure_type == FailureType::BootFailure {
                    self.cloud.block(scope, &o.target, &o.name);
                }
                hit
            }
        };
        self.log(
            t,
            format!(
                "outage {} starts: {} on {} node(s)",
                o.name,
                super::chaos::kind_name(o.failure_type),
                victims.len()
            ),
            observer,
        );
        // The scenario outlives the run: its chaos section is borrowed, not copied per node.
        let Some(chaos) = self.chaos_config() else {
            return;
        };
        for node in &victims {
            let gpus = self.cloud.placement(node).map_or(8, |p| p.gpus);
            let mut fault = ChaosDraws {
                config: chaos,
                rng: &mut self.rng,
            }
            .fault(o.failure_type, gpus);
            fault.lasting = Some(o.duration_ms);
            self.inject(node, &fault, t);
        }
        self.outage_nodes.insert(i, victims);
    }

    fn outage_end(&mut self, t: u64, i: usize, observer: &mut dyn RunObserver) {
        let Some(o) = self.chaos_config().map(|c| c.scheduled_outages[i].clone()) else {
            return;
        };
        self.cloud.unblock(&o.name);
        for node in self.outage_nodes.remove(&i).unwrap_or_default() {
            self.world.recover(&node);
        }
        self.log(t, format!("outage {} ends", o.name), observer);
    }
}

fn outage_scope(scope: OutageScope) -> &'static str {
    match scope {
        OutageScope::Zone => "zone",
        OutageScope::Region => "region",
        OutageScope::Provider | OutageScope::Percentage => "provider",
    }
}

/// The pools to run: the scenario's, or one pool for the whole fleet.
fn pool_configs(scenario: &Scenario) -> Result<Vec<PoolConfig>, RunError> {
    if !scenario.pools.is_empty() {
        return Ok(scenario.pools.clone());
    }
    let n = scenario.fleet.len() as u32 + scenario.generated_nodes();
    let yaml = format!(
        "pools:\n  {DEFAULT_POOL}:\n    provider: sim\n    min_nodes: {n}\n    max_nodes: {n}\n    replacement: {{surge: {}}}\n",
        (n / 10).max(1)
    );
    PoolsFile::from_yaml(&yaml)
        .map(|f| f.pools)
        .map_err(|e| RunError::DefaultPool(format!("{}: {}", e.path, e.message)))
}

/// Whether a node shows `want`.
fn status_matches(n: &Node, want: NodeStatusName) -> bool {
    use NodeStatusName as W;
    let is = |s: NodeStatus| n.status == s;
    match want {
        W::Active => is(NodeStatus::Active),
        W::Degraded => is(NodeStatus::Degraded),
        W::Cordoned => is(NodeStatus::Cordoned),
        W::Draining => is(NodeStatus::Draining),
        W::Terminating => is(NodeStatus::Terminating),
        W::Terminated => is(NodeStatus::Terminated),
        W::Failed => is(NodeStatus::Failed),
        W::Provisioning => is(NodeStatus::Provisioning),
        W::Registering => is(NodeStatus::Registering),
        W::Unhealthy => n.health == Verdict::Unhealthy,
        W::Healthy => n.status.serving() && n.health == Verdict::Healthy,
    }
}

fn name_of(want: NodeStatusName) -> &'static str {
    use NodeStatusName as W;
    match want {
        W::Active => "active",
        W::Degraded => "degraded",
        W::Cordoned => "cordoned",
        W::Draining => "draining",
        W::Terminating => "terminating",
        W::Terminated => "terminated",
        W::Failed => "failed",
        W::Provisioning => "provisioning",
        W::Registering => "registering",
        W::Unhealthy => "unhealthy",
        W::Healthy => "healthy",
    }
}

/// The node a status check looked at.
fn watched(what: &str) -> &str {
    what.trim_start_matches("node_status ")
}

fn describe(n: &Node) -> String {
    format!("{} ({})", n.status.as_str(), n.health.as_str())
}

/// Virtual time as `m:ss` or `h:mm:ss`.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}
