//! Given events / when command / then events, for the pool aggregate.

use super::*;
use flotilla_messages::fleet::PoolsFile;
use flotilla_messages::provisioner::ProvisionerEvent as E;

const MIN: u64 = 60_000;

fn config(extra: &str) -> PoolConfig {
    let yaml = format!(
        "pools:\n  - name: gpu\n    provider: sim\n    scaling: {{min_nodes: 3, max_nodes: 10, cooldown_period: 1m}}\n    health: {{unhealthy_threshold: 2, auto_replace: true, boot_grace: 60s, heartbeat_timeout: 2m}}\n{extra}"
    );
    PoolsFile::from_yaml(&yaml).unwrap().pools.remove(0)
}

/// A pool and the clock, driven command by command.
struct Given {
    pool: Pool,
    now: u64,
}

impl Given {
    fn pool(config: PoolConfig) -> Self {
        let mut g = Given {
            pool: Pool::default(),
            now: 1_000,
        };
        g.when(ProvisionerCommand::ApplyPool {
            config: Box::new(config),
            now: 1_000,
        });
        g
    }

    fn when(&mut self, command: ProvisionerCommand) -> Vec<ProvisionerEvent> {
        let events = self.pool.decide(&command).unwrap();
        for e in &events {
            self.pool = std::mem::take(&mut self.pool).evolve(e);
            index_matches_a_rebuild(&self.pool);
        }
        events
    }

    fn rejected(&self, command: ProvisionerCommand) -> Rejection {
        self.pool.decide(&command).unwrap_err()
    }

    fn advance(&mut self, ms: u64) -> u64 {
        self.now += ms;
        self.now
    }

    /// Provisions and registers every node still provisioning.
    fn bring_up(&mut self) {
        let ids: Vec<String> = self.ids_in(NodeStatus::Provisioning);
        for id in ids {
            let now = self.now;
            self.when(ProvisionerCommand::NodeProvisioned {
                instance_id: format!("i-{id}"),
                node_id: id,
                registered: true,
                now,
            });
        }
    }

    fn ids_in(&self, status: NodeStatus) -> Vec<String> {
        let state = self.pool.state().unwrap();
        state
            .nodes
            .values()
            .filter(|n| n.status == status)
            .map(|n| n.id.clone())
            .collect()
    }

    fn report(
        &mut self,
        node: &str,
        verdict: Verdict,
        action: HealthAction,
    ) -> Vec<ProvisionerEvent> {
        let now = self.now;
        self.when(ProvisionerCommand::ReportHealth {
            node_id: node.into(),
            now,
            verdict,
            action,
            reasons: vec!["test".into()],
        })
    }

    fn tick(&mut self) -> Vec<ProvisionerEvent> {
        let now = self.now;
        self.when(ProvisionerCommand::Tick {
            now,
            samples: vec![],
            heartbeats: BTreeMap::new(),
        })
    }

    fn status(&self, node: &str) -> NodeStatus {
        self.pool.node(node).unwrap().status
    }

    /// A pool of `config` with all its nodes active and past boot grace.
    fn running(config: PoolConfig) -> Self {
        let mut g = Given::pool(config);
        g.bring_up();
        g.advance(2 * MIN);
        g
    }
}

fn types(events: &[ProvisionerEvent]) -> Vec<&'static str> {
    events.iter().map(ProvisionerEvent::event_type).collect()
}

#[test]
fn a_new_pool_requests_its_minimum() {
    let g = Given::pool(config(""));
    let state = g.pool.state().unwrap();
    assert_eq!(state.desired, 3);
    assert_eq!(
        g.ids_in(NodeStatus::Provisioning),
        vec!["gpu-1", "gpu-2", "gpu-3"]
    );
}

#[test]
fn commands_before_the_pool_exists_are_not_found() {
    let e = Pool::default()
        .decide(&ProvisionerCommand::Tick {
            now: 1,
            samples: vec![],
            heartbeats: BTreeMap::new(),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let g = Given::pool(config(""));
    let e = g.rejected(ProvisionerCommand::RegisterNode {
        node_id: "nope".into(),
        now: 2,
    });
    assert_eq!(e.code, ErrorCode::NotFound);
}

#[test]
fn unhealthy_threshold_counts_consecutive_evaluations_not_transitions() {
    let mut g = Given::running(config(""));
    let first = g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    assert_eq!(types(&first), ["node_health_evaluated"]);
    // A healthy report in between resets the count.
    g.report("gpu-1", Verdict::Healthy, HealthAction::None);
    let again = g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    assert_eq!(types(&again), ["node_health_evaluated"]);
    // The second consecutive one (no transition: it was unhealthy already) acts.
    let second = g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    assert_eq!(
        types(&second),
        [
            "node_health_evaluated",
            "node_cordoned",
            "node_drain_started",
            "node_requested"
        ]
    );
    let E::NodeRequested {
        replaces, reason, ..
    } = &second[3]
    else {
        unreachable!()
    };
    assert_eq!(replaces.as_deref(), Some("gpu-1"));
    assert_eq!(*reason, RequestReason::Replacement);
}

#[test]
fn replacement_is_make_before_break() {
    let mut g = Given::running(config(""));
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    let now = g.now;
    // Drained, but the replacement is not up: the old node stays.
    let drained = g.when(ProvisionerCommand::NodeDrained {
        node_id: "gpu-1".into(),
        forced: false,
        now,
    });
    assert_eq!(types(&drained), ["node_drained"]);
    assert_eq!(g.status("gpu-1"), NodeStatus::Draining);
    // The replacement comes up: now the old node is terminated.
    let up = g.when(ProvisionerCommand::NodeProvisioned {
        node_id: "gpu-4".into(),
        instance_id: "i-4".into(),
        registered: true,
        now,
    });
    assert_eq!(
        types(&up),
        [
            "node_provisioned",
            "node_registered",
            "node_termination_requested"
        ]
    );
    g.when(ProvisionerCommand::NodeTerminated {
        node_id: "gpu-1".into(),
        now,
    });
    assert_eq!(g.status("gpu-1"), NodeStatus::Terminated);
    assert_eq!(g.ids_in(NodeStatus::Active).len(), 3, "back at size");
}

#[test]
fn reports_within_boot_grace_are_not_counted() {
    let mut g = Given::pool(config(""));
    g.bring_up();
    for _ in 0..3 {
        assert!(g
            .report("gpu-1", Verdict::Unhealthy, HealthAction::Replace)
            .is_empty());
    }
    g.advance(MIN);
    assert_eq!(
        g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace)
            .len(),
        1
    );
}

#[test]
fn a_silent_agent_is_unhealthy_after_the_heartbeat_timeout() {
    let mut g = Given::running(config(""));
    let heard = g.now;
    let tick = |g: &mut Given| {
        let now = g.now;
        g.when(ProvisionerCommand::Tick {
            now,
            samples: vec![],
            heartbeats: [("gpu-2".to_string(), heard)].into(),
        })
    };
    g.advance(MIN);
    assert!(tick(&mut g).is_empty());
    g.advance(MIN);
    let events = tick(&mut g);
    assert_eq!(
        types(&events),
        [
            "node_health_evaluated",
            "node_cordoned",
            "node_drain_started",
            "node_requested"
        ]
    );
    assert!(tick(&mut g).is_empty(), "flagged once");
}

#[test]
fn the_circuit_breaker_trips_when_too_much_of_the_pool_is_replaced() {
    let mut g = Given::running(config(
        "    replacement: {circuit_breaker: {max_replaced_percent: 50, window: 5m}}\n",
    ));
    let now = g.now;
    g.when(ProvisionerCommand::Resize { nodes: 10, now });
    g.bring_up();
    g.advance(2 * MIN);
    let mut tripped = Vec::new();
    for i in 1..=6 {
        let node = format!("gpu-{i}");
        g.report(&node, Verdict::Unhealthy, HealthAction::Replace);
        let events = g.report(&node, Verdict::Unhealthy, HealthAction::Replace);
        tripped.extend(
            events
                .into_iter()
                .filter(|e| e.event_type() == "circuit_breaker_tripped"),
        );
    }
    assert_eq!(tripped.len(), 1);
    let E::CircuitBreakerTripped {
        replacements,
        pool_size,
        node_id,
        ..
    } = &tripped[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (*replacements, *pool_size, node_id.as_str()),
        (6, 10, "gpu-6")
    );
    assert_eq!(g.status("gpu-6"), NodeStatus::Active, "not taken out");
    assert_eq!(g.ids_in(NodeStatus::Draining).len(), 5);
    // The window passes: the breaker closes and the sixth node is replaced.
    g.advance(5 * MIN);
    let events = g.tick();
    assert_eq!(types(&events)[0], "circuit_breaker_closed");
    assert!(types(&events).contains(&"node_drain_started"));
}

#[test]
fn a_gpu_reset_cordons_and_a_recovery_uncordons() {
    let mut g = Given::running(config(""));
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::ResetGpu);
    let events = g.report("gpu-1", Verdict::Unhealthy, HealthAction::ResetGpu);
    assert_eq!(types(&events), ["node_health_evaluated", "node_cordoned"]);
    let back = g.report("gpu-1", Verdict::Healthy, HealthAction::None);
    assert_eq!(types(&back), ["node_health_evaluated", "node_uncordoned"]);
    assert_eq!(g.status("gpu-1"), NodeStatus::Active);
}

#[test]
fn a_reset_that_does_not_help_within_the_timeout_replaces() {
    let mut g = Given::running(config("    replacement: {reset_timeout: 10m}\n"));
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::ResetGpu);
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::ResetGpu);
    g.advance(10 * MIN - 1);
    assert!(g.tick().is_empty());
    g.advance(1);
    assert_eq!(
        types(&g.tick()),
        ["node_cordoned", "node_drain_started", "node_requested"]
    );
}

#[test]
fn without_auto_replace_an_unhealthy_node_is_only_cordoned() {
    let mut c = config("");
    c.health.auto_replace = false;
    let mut g = Given::running(c);
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    let events = g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    assert_eq!(types(&events), ["node_health_evaluated", "node_cordoned"]);
}

#[test]
fn a_node_that_never_registers_fails_and_is_replaced() {
    let mut g = Given::pool(config(""));
    let now = g.now;
    g.when(ProvisionerCommand::NodeProvisioned {
        node_id: "gpu-1".into(),
        instance_id: "i-1".into(),
        registered: false,
        now,
    });
    g.advance(10 * MIN);
    let events = g.tick();
    assert_eq!(
        types(&events),
        [
            "node_failed",
            "node_termination_requested",
            "node_requested"
        ]
    );
}

#[test]
fn provisioning_failures_back_off() {
    let mut g = Given::pool(config(""));
    let now = g.now;
    let events = g.when(ProvisionerCommand::NodeProvisionFailed {
        node_id: "gpu-1".into(),
        error: "no capacity".into(),
        now,
    });
    assert_eq!(types(&events), ["node_failed"]);
    g.advance(PROVISION_RETRY_BACKOFF_MS - 1);
    assert!(g.tick().is_empty());
    g.advance(1);
    assert_eq!(types(&g.tick()), ["node_requested"]);
}

#[test]
fn without_surge_room_replacement_breaks_before_make() {
    let mut c = config("    replacement: {surge: 0}\n");
    c.min_nodes = 3;
    c.max_nodes = 3;
    let mut g = Given::running(c);
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    let events = g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    assert!(!types(&events).contains(&"node_requested"), "no room yet");
    let now = g.now;
    let events = g.when(ProvisionerCommand::NodeDrained {
        node_id: "gpu-1".into(),
        forced: false,
        now,
    });
    assert_eq!(
        types(&events),
        ["node_drained", "node_termination_requested"]
    );
    let events = g.when(ProvisionerCommand::NodeTerminated {
        node_id: "gpu-1".into(),
        now,
    });
    assert_eq!(types(&events), ["node_terminated", "node_requested"]);
}

#[test]
fn drain_timeouts_follow_the_mode() {
    let mut g = Given::running(config(
        "    replacement: {drain_timeout: 5m, drain_mode: evict_after_timeout}\n",
    ));
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    g.advance(5 * MIN);
    let events = g.tick();
    assert!(
        matches!(events[0], E::NodeDrained { forced: true, .. }),
        "{events:?}"
    );

    let mut g = Given::running(config(
        "    replacement: {drain_timeout: 5m, drain_mode: wait}\n",
    ));
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    g.report("gpu-1", Verdict::Unhealthy, HealthAction::Replace);
    g.advance(5 * MIN);
    assert_eq!(types(&g.tick()), ["node_drain_overdue"]);
    assert!(g.tick().is_empty(), "reported once, still waiting");
}

#[test]
fn the_autoscaler_scales_with_cooldown_and_bounds() {
    let mut g = Given::running(config(
        "    autoscaling: {type: reactive, scale_up_at: 80, scale_down_at: 20}\n",
    ));
    let busy = |at| SignalSample {
        at,
        utilization: Some(95.0),
        ..Default::default()
    };
    let tick = |g: &mut Given| {
        let now = g.now;
        g.when(ProvisionerCommand::Tick {
            now,
            samples: vec![busy(now)],
            heartbeats: BTreeMap::new(),
        })
    };
    let events = tick(&mut g);
    assert_eq!(types(&events), ["scale_decided", "node_requested"]);
    g.advance(30_000);
    assert!(tick(&mut g).is_empty(), "cooldown");
    g.advance(30_000);
    assert_eq!(types(&tick(&mut g)), ["scale_decided", "node_requested"]);
}

#[test]
fn scaling_down_drains_the_newest_then_terminates() {
    let mut g = Given::running(config(""));
    let now = g.now;
    g.when(ProvisionerCommand::Resize { nodes: 4, now });
    g.bring_up();
    let events = g.when(ProvisionerCommand::Resize { nodes: 3, now });
    assert_eq!(
        types(&events),
        ["scale_decided", "node_cordoned", "node_drain_started"]
    );
    assert_eq!(events[1].node_id(), Some("gpu-4"));
    let events = g.when(ProvisionerCommand::NodeDrained {
        node_id: "gpu-4".into(),
        forced: false,
        now,
    });
    assert_eq!(
        types(&events),
        ["node_drained", "node_termination_requested"]
    );
}

#[test]
fn repeated_outcomes_change_nothing() {
    let mut g = Given::running(config(""));
    let now = g.now;
    let again = g.when(ProvisionerCommand::NodeProvisioned {
        node_id: "gpu-1".into(),
        instance_id: "i-gpu-1".into(),
        registered: true,
        now,
    });
    assert!(again.is_empty());
    let same = g.pool.state().unwrap().config.clone();
    assert!(g
        .when(ProvisionerCommand::ApplyPool {
            config: Box::new((*same).clone()),
            now
        })
        .is_empty());
}

/// The index kept in step event by event equals one built from scratch,
/// and a snapshot read back rebuilds it (checked after every event of
/// every test above).
fn index_matches_a_rebuild(pool: &Pool) {
    let Some(state) = pool.state() else { return };
    let threshold = state.config.health.unhealthy_threshold;
    assert_eq!(
        state.index,
        super::NodeIndex::build(&state.nodes, threshold)
    );
    let read_back: PoolState =
        serde_json::from_value(serde_json::to_value(state).unwrap()).unwrap();
    assert_eq!(&read_back, state);
}

#[test]
fn an_operator_cordon_keeps_the_node_in_the_pool_until_uncordoned() {
    let mut g = Given::running(config(""));
    let now = g.now;
    let cordon = ProvisionerCommand::CordonNode {
        node_id: "gpu-2".into(),
        now,
    };
    assert_eq!(types(&g.when(cordon.clone())), vec!["node_cordoned"]);
    assert_eq!(g.status("gpu-2"), NodeStatus::Cordoned);
    assert!(g.when(cordon).is_empty(), "a repeat changes nothing");
    let healthy = g.report("gpu-2", Verdict::Healthy, HealthAction::None);
    assert!(
        healthy.is_empty(),
        "a healthy report does not lift it: {healthy:?}"
    );
    assert_eq!(g.status("gpu-2"), NodeStatus::Cordoned);
    assert!(
        g.tick().is_empty(),
        "a cordoned node still counts: no new node"
    );
    let uncordon = ProvisionerCommand::UncordonNode {
        node_id: "gpu-2".into(),
        now,
    };
    assert_eq!(types(&g.when(uncordon)), vec!["node_uncordoned"]);
    assert_eq!(g.status("gpu-2"), NodeStatus::Active);
}

#[test]
fn an_operator_drain_retires_the_node_and_the_pool_tops_up() {
    let mut g = Given::running(config(""));
    let now = g.now;
    let events = g.when(ProvisionerCommand::DrainNode {
        node_id: "gpu-1".into(),
        now,
    });
    assert_eq!(
        types(&events),
        vec!["node_cordoned", "node_drain_started", "node_requested"]
    );
    assert!(matches!(
        &events[2],
        E::NodeRequested { replaces: None, .. }
    ));
    let drained = g.when(ProvisionerCommand::NodeDrained {
        node_id: "gpu-1".into(),
        forced: false,
        now,
    });
    assert_eq!(
        types(&drained),
        vec!["node_drained", "node_termination_requested"]
    );
    assert_eq!(g.pool.state().unwrap().replacements.len(), 0, "not a fault");
}

#[test]
fn operator_commands_refuse_nodes_out_of_service_and_unknown_nodes() {
    let mut g = Given::running(config(""));
    let now = g.now;
    g.report("gpu-3", Verdict::Unhealthy, HealthAction::ResetGpu);
    g.report("gpu-3", Verdict::Unhealthy, HealthAction::ResetGpu);
    assert_eq!(g.status("gpu-3"), NodeStatus::Cordoned);
    let refused = g.rejected(ProvisionerCommand::UncordonNode {
        node_id: "gpu-3".into(),
        now,
    });
    assert_eq!(refused.code, ErrorCode::InvalidState, "{refused:?}");
    let missing = g.rejected(ProvisionerCommand::CordonNode {
        node_id: "gpu-9".into(),
        now,
    });
    assert_eq!(missing.code, ErrorCode::NotFound);
    let gone = g.rejected(ProvisionerCommand::CordonNode {
        node_id: "gpu-3".into(),
        now,
    });
    assert_eq!(gone.code, ErrorCode::InvalidState);
}
