//! The actor host against the real embedded backend (sled in a temp dir):
//! the command step, idempotency, optimistic concurrency between two hosts
//! of one aggregate, snapshots + replay, and effects re-driven after a crash.

use async_trait::async_trait;
use flotilla_bus::embedded::{EmbeddedBus, SledLog};
use flotilla_bus::EventLog;
use flotilla_host::{
    replay, Aggregate, AggregateCore, AggregateRegistry, EffectHandler, Execute, HostConfig,
    HostDeps, HostMetrics, Query, Until,
};
use flotilla_messages::{Actor, CommandRequest, Envelope, ErrorCode, Rejection, StreamName};
use flotilla_solver::Study;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn deps(dir: &std::path::Path, snapshot_every: u64) -> HostDeps {
    HostDeps {
        log: Arc::new(SledLog::open(dir).expect("open log")),
        bus: Arc::new(EmbeddedBus::new()),
        config: Arc::new(HostConfig {
            snapshot_every,
            ..HostConfig::default()
        }),
        metrics: HostMetrics::unregistered(),
    }
}

fn request(v: Value) -> CommandRequest {
    CommandRequest::from_value(v, None).expect("a command")
}

fn keyed(v: Value, key: &str) -> CommandRequest {
    CommandRequest::from_value(v, Some(key)).expect("a command")
}

fn create() -> Value {
    json!({"type": "create_study", "seed": 3, "budget": 50,
           "bounds": {"x": {"min": 0, "max": 1}, "lr": {"min": 1e-4, "max": 1e-1, "scale": "Log"}}})
}

/// A study host on `d`'s log, recovered.
async fn study_core(d: &HostDeps) -> AggregateCore<Study> {
    AggregateCore::<Study>::recover(stream("s"), d.clone())
        .await
        .unwrap()
}

fn stream(id: &str) -> StreamName {
    StreamName::new(Actor::Solver, id).unwrap()
}

async fn head(log: &Arc<dyn EventLog>, s: &str) -> u64 {
    log.head(s).await.unwrap().seq
}

#[tokio::test]
async fn a_command_is_stored_evolved_published_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let d = deps(dir.path(), 0);
    let mut events = d.bus.subscribe("flotilla.evt.solver.*").await.unwrap();
    let mut core = study_core(&d).await;
    let (reply, _) = core.execute(request(create()), None).await;
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.seq, Some(1));
    let published = events.next().await.expect("published");
    assert_eq!(published.subject, "flotilla.evt.solver.s");
    let env: Envelope = serde_json::from_slice(&published.payload).unwrap();
    assert_eq!(env, reply.events.unwrap()[0]);
    assert_eq!(head(&d.log, "solver/s").await, 1);
}

#[tokio::test]
async fn a_repeated_command_id_returns_the_first_reply_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = deps(dir.path(), 0);
    let mut core = study_core(&d).await;
    core.execute(request(create()), None).await;
    let (first, _) = core
        .execute(keyed(json!({"type": "ask", "n": 2}), "k1"), None)
        .await;
    let (again, _) = core
        .execute(keyed(json!({"type": "ask", "n": 2}), "k1"), None)
        .await;
    assert_eq!(first, again);
    assert_eq!(head(&d.log, "solver/s").await, 2);
    // Also after a restart, from the log.
    drop(core);
    let mut core = study_core(&d).await;
    let (after, _) = core
        .execute(keyed(json!({"type": "ask", "n": 2}), "k1"), None)
        .await;
    assert_eq!(first, after);
    assert_eq!(head(&d.log, "solver/s").await, 2);
}

#[tokio::test]
async fn bad_commands_are_typed_rejections_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = deps(dir.path(), 0);
    let mut core = study_core(&d).await;
    core.execute(request(create()), None).await;
    let cases = [
        (json!({"type": "fly"}), ErrorCode::UnknownCommand),
        (
            json!({"type": "ask", "n": 1, "colour": "red"}),
            ErrorCode::UnknownField,
        ),
        (json!({"type": "ask", "n": "two"}), ErrorCode::InvalidField),
        (
            json!({"type": "ask", "expected_seq": 9}),
            ErrorCode::WrongExpectedSeq,
        ),
        (
            json!({"type": "tell", "trial_id": "t7", "value": 1.0}),
            ErrorCode::UnknownTrial,
        ),
        (create(), ErrorCode::AlreadyExists),
    ];
    for (body, code) in cases {
        let (reply, _) = core.execute(request(body.clone()), None).await;
        assert!(!reply.ok, "{body} was accepted");
        assert_eq!(reply.error.unwrap().code, code.as_str(), "{body}");
        assert_eq!(core.seq(), 1, "{body} changed the state");
    }
    assert_eq!(head(&d.log, "solver/s").await, 1, "nothing appended");
    let (ok, _) = core
        .execute(request(json!({"type": "ask", "expected_seq": 1})), None)
        .await;
    assert!(ok.ok, "the right expected_seq is accepted: {ok:?}");
}

#[tokio::test]
async fn two_hosts_of_one_aggregate_resolve_conflicts_by_catching_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = deps(dir.path(), 0);
    let mut a = study_core(&d).await;
    let mut b = study_core(&d).await;
    a.execute(request(create()), None).await;
    let (ra, _) = a
        .execute(request(json!({"type": "ask", "n": 1})), None)
        .await;
    // b has not seen a's events: its append conflicts, it catches up and decides again.
    let (rb, _) = b
        .execute(request(json!({"type": "ask", "n": 1})), None)
        .await;
    assert!(rb.ok, "{rb:?}");
    assert_eq!(rb.seq, Some(3));
    let ta = &ra.result.unwrap()["trials"][0]["trial_id"];
    let tb = &rb.result.unwrap()["trials"][0]["trial_id"];
    assert_ne!(ta, tb, "no trial is handed out twice");
}

#[tokio::test]
async fn recovery_from_a_snapshot_equals_a_clean_replay() {
    let dir = tempfile::tempdir().unwrap();
    let d = deps(dir.path(), 4);
    let mut core = study_core(&d).await;
    core.execute(request(create()), None).await;
    for i in 0..9 {
        let (r, _) = core
            .execute(request(json!({"type": "ask", "n": 1})), None)
            .await;
        let id = r.result.unwrap()["trials"][0]["trial_id"].clone();
        core.execute(
            request(json!({"type": "tell", "trial_id": id, "value": i as f64 * 0.5})),
            None,
        )
        .await;
    }
    let live = core.state().clone();
    assert!(
        d.log.load_snapshot("solver/s").await.unwrap().is_some(),
        "a snapshot was saved"
    );
    drop(core);
    let recovered = study_core(&d).await;
    let clean = replay::<Study>(d.log.as_ref(), "solver/s", Until::End)
        .await
        .unwrap();
    assert_eq!(recovered.seq(), clean.seq);
    let bits = |s: &Study| rmp_serde::to_vec_named(s).unwrap();
    assert_eq!(bits(recovered.state()), bits(&clean.state));
    assert_eq!(bits(&live), bits(&clean.state));
}

// ---- effects, with a tiny aggregate that asks for one ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Launcher {
    launched: Vec<String>,
    done: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum LauncherCommand {
    Launch { name: String },
    Finished { name: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LauncherEvent {
    LaunchRequested { name: String },
    LaunchFinished { name: String },
}

impl Aggregate for Launcher {
    const ACTOR: Actor = Actor::Scheduler;
    const COMMAND_TYPES: &'static [&'static str] = &["launch", "finished"];
    type Command = LauncherCommand;
    type Event = LauncherEvent;
    type Settings = ();

    fn decide(&self, command: &LauncherCommand) -> Result<Vec<LauncherEvent>, Rejection> {
        Ok(match command {
            LauncherCommand::Launch { name } => {
                vec![LauncherEvent::LaunchRequested { name: name.clone() }]
            }
            LauncherCommand::Finished { name } if !self.done.contains(name) => {
                vec![LauncherEvent::LaunchFinished { name: name.clone() }]
            }
            LauncherCommand::Finished { .. } => vec![],
        })
    }

    fn evolve(mut self, event: &LauncherEvent) -> Self {
        match event {
            LauncherEvent::LaunchRequested { name } => self.launched.push(name.clone()),
            LauncherEvent::LaunchFinished { name } => self.done.push(name.clone()),
        }
        self
    }

    fn result(_: &[LauncherEvent]) -> Value {
        json!({})
    }

    fn view(&self) -> Value {
        json!({"launched": self.launched, "done": self.done})
    }

    fn event_type(event: &LauncherEvent) -> &'static str {
        match event {
            LauncherEvent::LaunchRequested { .. } => "launch_requested",
            LauncherEvent::LaunchFinished { .. } => "launch_finished",
        }
    }

    fn wants_effect(event: &LauncherEvent) -> bool {
        matches!(event, LauncherEvent::LaunchRequested { .. })
    }
}

/// Counts runs and reports each launch as finished.
struct CountingLauncher(Arc<AtomicUsize>);

#[async_trait]
impl EffectHandler<Launcher> for CountingLauncher {
    async fn run(&self, _: &Envelope, event: &LauncherEvent) -> Option<Value> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let LauncherEvent::LaunchRequested { name } = event else {
            return None;
        };
        Some(json!({"type": "finished", "name": name}))
    }
}

async fn view_when_done(registry: &AggregateRegistry<Launcher>, id: &str, want: usize) -> Value {
    for _ in 0..200 {
        let v = registry.get(id).unwrap().send(Query).await.unwrap();
        let result = v.result.clone().unwrap_or_default();
        if result["done"].as_array().map_or(0, Vec::len) >= want {
            return result;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("effects did not finish");
}

#[actix_rt::test]
async fn effects_run_after_their_event_and_are_redriven_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let d = deps(dir.path(), 0);
    // A "crashed" host stored a launch request but never ran its effect.
    let mut crashed = AggregateCore::<Launcher>::recover(
        StreamName::new(Actor::Scheduler, "j").unwrap(),
        d.clone(),
    )
    .await
    .unwrap();
    let (stored, jobs) = crashed
        .execute(request(json!({"type": "launch", "name": "a"})), None)
        .await;
    assert!(stored.ok && jobs.len() == 1);
    drop(crashed);

    let runs = Arc::new(AtomicUsize::new(0));
    let registry = AggregateRegistry::<Launcher>::new(
        d.clone(),
        Some(Arc::new(CountingLauncher(runs.clone()))),
    );
    assert_eq!(registry.recover_all().await.unwrap(), 1);
    let view = view_when_done(&registry, "j", 1).await;
    assert_eq!(
        view["done"],
        json!(["a"]),
        "the unsettled effect was re-driven"
    );

    let addr = registry.get("j").unwrap();
    addr.send(Execute {
        request: request(json!({"type": "launch", "name": "b"})),
        correlation_id: None,
    })
    .await
    .unwrap();
    let view = view_when_done(&registry, "j", 2).await;
    assert_eq!(view["done"], json!(["a", "b"]));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "each effect ran once");

    // A fresh host over the same log finds nothing left to do.
    let again = Arc::new(AtomicUsize::new(0));
    let fresh = AggregateRegistry::<Launcher>::new(
        d.clone(),
        Some(Arc::new(CountingLauncher(again.clone()))),
    );
    fresh.recover_all().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        again.load(Ordering::SeqCst),
        0,
        "settled effects are not repeated"
    );
    let log_head = d.log.head("scheduler/j").await.unwrap().seq;
    assert_eq!(log_head, 4, "two requests and two outcomes, once each");
}

// ---- faults: the real sled log behind a wrapper that fails on cue ----

/// Which faults to inject, once each.
#[derive(Default)]
struct Faults {
    /// The next append of an effect outcome (`fx-` command) fails before storing.
    refuse_outcome: std::sync::atomic::AtomicBool,
    /// The next append is stored but reports a failure (a lost ack).
    lose_ack: std::sync::atomic::AtomicBool,
    /// The next stream read fails (a passing backend timeout).
    fail_read: std::sync::atomic::AtomicBool,
}

/// The real log with injected faults.
struct FaultyLog {
    inner: Arc<dyn EventLog>,
    faults: Faults,
}

fn take(flag: &std::sync::atomic::AtomicBool) -> bool {
    flag.swap(false, Ordering::SeqCst)
}

#[async_trait]
impl EventLog for FaultyLog {
    async fn store_batch(
        &self,
        batch: flotilla_bus::CheckedBatch<'_>,
    ) -> Result<Vec<Envelope>, flotilla_bus::LogError> {
        let (stream, expected_seq, events) = batch.into_parts();
        let outcome = events.iter().any(|e| e.causation_id.starts_with("fx-"));
        if outcome && take(&self.faults.refuse_outcome) {
            return Err(flotilla_bus::LogError::Backend(
                "injected: append refused".into(),
            ));
        }
        let stored = self.inner.append(stream, expected_seq, events).await;
        if take(&self.faults.lose_ack) {
            return Err(flotilla_bus::LogError::Backend("injected: ack lost".into()));
        }
        stored
    }
    async fn head(&self, s: &str) -> Result<flotilla_bus::StreamHead, flotilla_bus::LogError> {
        self.inner.head(s).await
    }
    async fn read_stream(
        &self,
        s: &str,
        from: u64,
    ) -> Result<flotilla_bus::EventStream, flotilla_bus::LogError> {
        if take(&self.faults.fail_read) {
            return Err(flotilla_bus::LogError::Backend(
                "injected: read timed out".into(),
            ));
        }
        self.inner.read_stream(s, from).await
    }
    async fn read_all(
        &self,
        from: u64,
        follow: bool,
    ) -> Result<flotilla_bus::PositionedStream, flotilla_bus::LogError> {
        self.inner.read_all(from, follow).await
    }
    async fn streams(&self) -> Result<Vec<String>, flotilla_bus::LogError> {
        self.inner.streams().await
    }
    async fn save_snapshot(
        &self,
        s: &str,
        snap: flotilla_bus::Snapshot,
    ) -> Result<(), flotilla_bus::LogError> {
        self.inner.save_snapshot(s, snap).await
    }
    async fn load_snapshot(
        &self,
        s: &str,
    ) -> Result<Option<flotilla_bus::Snapshot>, flotilla_bus::LogError> {
        self.inner.load_snapshot(s).await
    }
}

fn faulty(base: &HostDeps) -> (HostDeps, Arc<FaultyLog>) {
    let log = Arc::new(FaultyLog {
        inner: base.log.clone(),
        faults: Faults::default(),
    });
    (
        HostDeps {
            log: log.clone(),
            ..base.clone()
        },
        log,
    )
}

fn execute(request: CommandRequest) -> Execute {
    Execute {
        request,
        correlation_id: None,
    }
}

#[tokio::test]
async fn a_retried_command_id_on_a_stale_host_is_recalled_not_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = deps(dir.path(), 0);
    let mut stale = study_core(&d).await;
    let mut fresh = study_core(&d).await;
    fresh.execute(request(create()), None).await;
    let (first, _) = fresh
        .execute(keyed(json!({"type": "ask", "n": 1}), "k1"), None)
        .await;
    // The client's retry of k1 lands on a host that has not seen the study yet.
    let (again, _) = stale
        .execute(keyed(json!({"type": "ask", "n": 1}), "k1"), None)
        .await;
    assert_eq!(again, first, "the retry gets the first reply");
    assert_eq!(head(&d.log, "solver/s").await, 2, "k1 was applied once");
}

#[actix_rt::test]
async fn an_effect_whose_outcome_the_log_refused_is_offered_again() {
    let dir = tempfile::tempdir().unwrap();
    let (d, log) = faulty(&deps(dir.path(), 1));
    log.faults.refuse_outcome.store(true, Ordering::SeqCst);
    let runs = Arc::new(AtomicUsize::new(0));
    let registry =
        AggregateRegistry::<Launcher>::new(d, Some(Arc::new(CountingLauncher(runs.clone()))));
    let addr = registry.get("j").unwrap();
    addr.send(execute(request(json!({"type": "launch", "name": "a"}))))
        .await
        .unwrap();
    let view = view_when_done(&registry, "j", 1).await;
    assert_eq!(
        view["done"],
        json!(["a"]),
        "the outcome was recorded after all"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the effect itself ran once");
}

#[actix_rt::test]
async fn effects_of_an_append_whose_ack_was_lost_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let (d, log) = faulty(&deps(dir.path(), 0));
    let runs = Arc::new(AtomicUsize::new(0));
    let registry =
        AggregateRegistry::<Launcher>::new(d, Some(Arc::new(CountingLauncher(runs.clone()))));
    let addr = registry.get("j").unwrap();
    log.faults.lose_ack.store(true, Ordering::SeqCst);
    let lost = addr
        .send(execute(keyed(json!({"type": "launch", "name": "a"}), "c1")))
        .await
        .unwrap();
    assert!(!lost.ok, "the client saw a failure");
    let retried = addr
        .send(execute(keyed(json!({"type": "launch", "name": "a"}), "c1")))
        .await
        .unwrap();
    assert!(
        retried.ok,
        "the retry finds the landed command: {retried:?}"
    );
    let view = view_when_done(&registry, "j", 1).await;
    assert_eq!(view["launched"], json!(["a"]), "launched once");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[actix_rt::test]
async fn a_passing_failure_during_recovery_is_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let (d, log) = faulty(&deps(dir.path(), 0));
    log.faults.fail_read.store(true, Ordering::SeqCst);
    let registry = AggregateRegistry::<Study>::new(d, None);
    let failed = registry
        .get("s")
        .unwrap()
        .send(execute(request(create())))
        .await;
    assert!(
        failed.map_or(true, |r| !r.ok),
        "the first command meets the failed recovery"
    );
    let mut last = None;
    for _ in 0..50 {
        let r = registry
            .get("s")
            .unwrap()
            .send(execute(request(create())))
            .await;
        if let Ok(r) = r {
            if r.ok {
                last = Some(r);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        last.is_some(),
        "a fresh actor recovered and took the command"
    );
}

#[actix_rt::test]
async fn a_typed_command_runs_like_its_wire_form() {
    let dir = tempfile::tempdir().unwrap();
    let registry = AggregateRegistry::<Launcher>::new(deps(dir.path(), 0), None);
    let launch = || LauncherCommand::Launch { name: "a".into() };
    let first = registry
        .execute_typed("j", launch(), Some("k1".into()))
        .await;
    assert!(first.ok, "{first:?}");
    let again = registry
        .execute_typed("j", launch(), Some("k1".into()))
        .await;
    assert_eq!(again.seq, first.seq, "a repeated id is recalled");
    let wire = json!({"type": "launch", "name": "a"});
    let wire = registry.execute("j", keyed(wire, "k1"), None).await;
    assert_eq!(wire.seq, first.seq, "both forms share the ids");
    let bad = registry
        .execute_typed("j", launch(), Some("not an id".into()))
        .await;
    assert_eq!(
        bad.error.map(|e| e.code),
        Some(ErrorCode::InvalidId.as_str().to_string()),
        "a typed command's id is checked like a request's"
    );
    let view = registry.get("j").unwrap().send(Query).await.unwrap();
    assert_eq!(view.result.unwrap()["launched"], json!(["a"]));
}

#[actix_rt::test]
async fn commands_run_in_the_order_of_the_calls_not_of_the_awaits() {
    let dir = tempfile::tempdir().unwrap();
    let registry = AggregateRegistry::<Launcher>::new(deps(dir.path(), 0), None);
    let launch = |name: &str| request(json!({"type": "launch", "name": name}));
    let first = registry.execute("j", launch("x"), None);
    let second = registry.execute("j", launch("y"), None);
    let (second, first) = (second.await, first.await);
    assert_eq!((first.seq, second.seq), (Some(1), Some(2)));
}

/// A registry of studies whose actors passivate after `idle`.
fn passivating(dir: &std::path::Path, idle: std::time::Duration) -> Arc<AggregateRegistry<Study>> {
    let mut d = deps(dir, 0);
    d.config = Arc::new(HostConfig {
        passivate_after: Some(idle),
        ..HostConfig::default()
    });
    AggregateRegistry::<Study>::new(d, None)
}

#[actix_rt::test]
async fn ids_that_were_only_refused_hold_no_actor() {
    let dir = tempfile::tempdir().unwrap();
    let registry = passivating(dir.path(), std::time::Duration::from_secs(3600));
    for i in 0..500 {
        let reply = registry
            .execute(&format!("ghost-{i}"), request(json!({"type": "ask"})), None)
            .await;
        assert_eq!(reply.error.unwrap().code, "NOT_FOUND");
    }
    let created = registry.execute("real", request(create()), None).await;
    assert!(created.ok, "{created:?}");
    assert_eq!(registry.hosted(), 1, "only the study that exists is hosted");
}

#[actix_rt::test]
async fn an_idle_actor_passivates_and_its_next_command_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry = passivating(dir.path(), std::time::Duration::from_millis(50));
    assert!(registry.execute("s", request(create()), None).await.ok);
    let asked = registry
        .execute("s", request(json!({"type": "ask"})), None)
        .await;
    assert_eq!(asked.seq, Some(2));
    for _ in 0..100 {
        if registry.hosted() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(registry.hosted(), 0, "the idle study was passivated");
    let again = registry
        .execute("s", request(json!({"type": "ask"})), None)
        .await;
    assert_eq!(again.seq, Some(3), "recovered where it left off: {again:?}");
}

#[actix_rt::test]
async fn no_command_is_lost_when_its_actor_passivates_as_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let registry = passivating(dir.path(), std::time::Duration::from_millis(10));
    let big = json!({"type": "create_study", "seed": 3, "budget": 5000,
                     "bounds": {"x": {"min": 0, "max": 1}}});
    assert!(registry.execute("s", request(big), None).await.ok);
    let mut passivated = 0;
    for i in 0..300u64 {
        // Pauses around the passivation time, so commands meet actors
        // that are about to leave.
        tokio::time::sleep(std::time::Duration::from_millis(i % 13)).await;
        passivated += usize::from(registry.hosted() == 0);
        let replies = futures::future::join_all(
            (0..3).map(|_| registry.execute("s", request(json!({"type": "ask"})), None)),
        )
        .await;
        for reply in replies {
            assert!(reply.ok, "command {i}: {reply:?}");
        }
    }
    // Under load fewer commands meet an empty registry; a handful is enough.
    assert!(passivated >= 5, "the actor passivated {passivated} times");
}

/// Lets [`Slow`]'s long command finish.
static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An aggregate whose `work` with `hold` decides until [`RELEASE`] is set
/// (or 20 s pass): a command that keeps its thread busy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Slow {
    done: u32,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum SlowCommand {
    Work { hold: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum SlowEvent {
    Worked,
}

impl Aggregate for Slow {
    const ACTOR: Actor = Actor::Solver;
    const COMMAND_TYPES: &'static [&'static str] = &["work"];
    type Command = SlowCommand;
    type Event = SlowEvent;
    type Settings = ();

    fn decide(&self, command: &SlowCommand) -> Result<Vec<SlowEvent>, Rejection> {
        let SlowCommand::Work { hold } = command;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while *hold && !RELEASE.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(vec![SlowEvent::Worked])
    }

    fn evolve(mut self, _: &SlowEvent) -> Self {
        self.done += 1;
        self
    }

    fn result(_: &[SlowEvent]) -> Value {
        json!({"released": RELEASE.load(Ordering::SeqCst)})
    }

    fn view(&self) -> Value {
        json!({"done": self.done})
    }

    fn event_type(_: &SlowEvent) -> &'static str {
        "worked"
    }
}

#[actix_rt::test]
async fn a_long_command_does_not_hold_back_an_aggregate_on_another_arbiter() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = deps(dir.path(), 0);
    d.config = Arc::new(HostConfig {
        arbiters: 4,
        ..HostConfig::default()
    });
    let registry = AggregateRegistry::<Slow>::new(d, None);
    let heavy = "heavy";
    let light = (0..100)
        .map(|i| format!("light-{i}"))
        .find(|id| registry.arbiter_of(id) != registry.arbiter_of(heavy))
        .expect("an id on another arbiter");
    let held = registry.execute(heavy, request(json!({"type": "work", "hold": true})), None);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let quick = registry
        .execute(
            &light,
            request(json!({"type": "work", "hold": false})),
            None,
        )
        .await;
    // Answered while the long command still decides: it has not been released.
    assert!(quick.ok, "{quick:?}");
    RELEASE.store(true, Ordering::SeqCst);
    let held = held.await;
    assert_eq!(
        held.result.unwrap()["released"],
        true,
        "the long command waited for the release"
    );
}
