//! One aggregate's durable state machine, without actix: recovery and the
//! command step. [`crate::AggregateActor`] wraps it so that commands
//! to one aggregate run one at a time; keeping the logic here, in plain
//! async Rust, makes it readable and testable on its own.
//!
//! The command step is: idempotency check on the command id → expected-seq
//! check → parse → decide → append with the expected seq (on a conflict:
//! catch up from the log and decide again) → evolve → publish → reply.
//! A command typed in this process skips the parse. A rejection or a failed
//! append leaves the state untouched.

use crate::effects::outcome_command_id;
use crate::{Aggregate, HostMetrics};
use flotilla_bus::{Bus, EventLog, LogError, Message, Snapshot, StreamHead};
use flotilla_messages::envelope::now_micros;
use flotilla_messages::{
    auth, validate_id, CommandRequest, Encoding, Envelope, ErrorCode, IntegrityError, Page,
    Payload, PendingEvent, Rejection, Reply, StreamName, Subjects,
};
use futures::TryStreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Settings shared by every aggregate host of a process.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Subject names.
    pub subjects: Subjects,
    /// Save a snapshot every this many events (0: never).
    pub snapshot_every: u64,
    /// How many recent command ids each aggregate remembers for idempotency.
    pub idempotency_window: usize,
    /// How often a command is decided again after losing an append race.
    pub max_conflict_retries: u32,
    /// An aggregate's actor idle this long is stopped (its next command
    /// recovers it); `None` keeps actors until the process ends.
    pub passivate_after: Option<std::time::Duration>,
    /// The largest encoded event a command may cause, in bytes.
    pub max_event_bytes: usize,
    /// The most bytes of events one command may cause. Below the
    /// transport's message limit either way (see [`HostDeps::batch_limit`]).
    pub max_batch_bytes: usize,
    /// Threads (actix arbiters) each registry spreads its aggregates over,
    /// by id, so that one aggregate's long command does not hold the others
    /// back; 0 hosts them all on the caller's arbiter.
    pub arbiters: usize,
}

/// [`HostConfig::max_event_bytes`] by default: 256 KiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;
/// [`HostConfig::max_batch_bytes`] by default: 512 KiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 512 * 1024;
/// What a reply adds around its events (ids, checksums, the stream name),
/// per event, by a generous estimate.
const ENVELOPE_BYTES: usize = 512;
/// Room kept free in a transport message for headers and the reply's frame.
const MESSAGE_HEADROOM: usize = 64 * 1024;

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            subjects: Subjects::default(),
            snapshot_every: 1000,
            idempotency_window: 10_000,
            max_conflict_retries: 8,
            passivate_after: Some(std::time::Duration::from_secs(600)),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            arbiters: 0,
        }
    }
}

/// What the host needs from the outside world.
#[derive(Clone)]
pub struct HostDeps {
    /// Where events are stored.
    pub log: Arc<dyn EventLog>,
    /// Where events are published.
    pub bus: Arc<dyn Bus>,
    /// Settings.
    pub config: Arc<HostConfig>,
    /// Metrics.
    pub metrics: HostMetrics,
}

impl HostDeps {
    /// The most bytes of events one command may cause: the configured
    /// limit, and below half the transport's message limit, since a reply
    /// carries the events and a result derived from them.
    pub fn batch_limit(&self) -> usize {
        let transport = self
            .bus
            .max_payload()
            .map_or(usize::MAX, |max| max.saturating_sub(MESSAGE_HEADROOM) / 2);
        self.config.max_batch_bytes.min(transport)
    }

    /// The largest encoded event: the configured limit, within the batch's.
    pub fn event_limit(&self) -> usize {
        self.config.max_event_bytes.min(self.batch_limit())
    }
}

/// A command id and the events it caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    id: String,
    first_seq: u64,
    last_seq: u64,
}

/// The most recent command ids, oldest first.
#[derive(Debug, Clone, Default)]
struct CommandWindow {
    order: VecDeque<Remembered>,
    index: HashMap<String, (u64, u64)>,
    capacity: usize,
}

impl CommandWindow {
    fn remember(&mut self, id: &str, seq: u64) {
        if let Some(range) = self.index.get_mut(id) {
            range.1 = seq;
            if let Some(r) = self.order.iter_mut().rev().find(|r| r.id == id) {
                r.last_seq = seq;
            }
            return;
        }
        self.index.insert(id.to_string(), (seq, seq));
        self.order.push_back(Remembered {
            id: id.to_string(),
            first_seq: seq,
            last_seq: seq,
        });
        while self.order.len() > self.capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.index.remove(&old.id);
            }
        }
    }

    fn get(&self, id: &str) -> Option<(u64, u64)> {
        self.index.get(id).copied()
    }
}

/// What a snapshot holds besides the domain state.
#[derive(Serialize, Deserialize)]
struct SnapshotBody<A> {
    state: A,
    commands: Vec<Remembered>,
    pending_effects: BTreeMap<u64, String>,
}

/// An event whose effect should run.
#[derive(Debug, Clone)]
pub struct EffectJob<A: Aggregate> {
    /// The stored event.
    pub envelope: Envelope,
    /// Its typed payload.
    pub event: A::Event,
}

/// Where a command comes from: its conversation and who sent it.
struct Origin {
    correlation_id: Option<String>,
    principal: String,
}

/// A command as the step takes it: off the wire, or typed in this process.
pub(crate) enum Submission<C> {
    /// A request still to be parsed into the aggregate's command.
    Request(CommandRequest),
    /// A command built in this process (its id already checked).
    Typed {
        /// The command.
        command: C,
        /// Its idempotency key, if any.
        command_id: Option<String>,
    },
}

impl<C: DeserializeOwned> Submission<C> {
    /// A typed command, idempotent under `command_id` when given; refused
    /// like a request whose `command_id` is not a valid id.
    pub(crate) fn typed(command: C, command_id: Option<String>) -> Result<Self, Rejection> {
        if let Some(id) = &command_id {
            validate_id("command_id", id)
                .map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))?;
        }
        Ok(Submission::Typed {
            command,
            command_id,
        })
    }

    fn command_id(&self) -> Option<&str> {
        match self {
            Submission::Request(request) => request.command_id.as_deref(),
            Submission::Typed { command_id, .. } => command_id.as_deref(),
        }
    }

    /// Who the events it causes are attributed to: the request's principal
    /// as the transport vouched for it, or the control plane for what this
    /// process built itself (effect outcomes, ticks, ingested reports).
    fn principal(&self) -> String {
        match self {
            Submission::Request(request) => request
                .principal
                .clone()
                .unwrap_or_else(|| auth::ANONYMOUS.to_string()),
            Submission::Typed { .. } => auth::CONTROL_PLANE.to_string(),
        }
    }

    fn expected_seq(&self) -> Option<u64> {
        match self {
            Submission::Request(request) => request.expected_seq,
            Submission::Typed { .. } => None,
        }
    }

    /// The aggregate's command: parsed from a request, or as given.
    fn into_command<A: Aggregate<Command = C>>(self) -> Result<C, Rejection> {
        match self {
            Submission::Request(request) => request.parse(A::ACTOR.as_str(), A::COMMAND_TYPES),
            Submission::Typed { command, .. } => Ok(command),
        }
    }
}

/// One aggregate's state and the machinery to change it durably.
pub struct AggregateCore<A: Aggregate> {
    stream: StreamName,
    name: String,
    state: A,
    head: StreamHead,
    commands: CommandWindow,
    rejections: HashMap<String, Reply>,
    /// Events that asked for an effect with no recorded outcome, by seq.
    pending_effects: BTreeMap<u64, String>,
    stale: bool,
    last_snapshot: u64,
    deps: HostDeps,
    /// The host's settings every decision of this aggregate is made under.
    settings: A::Settings,
}

const REJECTION_MEMORY: usize = 1024;

impl<A: Aggregate> AggregateCore<A> {
    /// Recovers the aggregate: latest snapshot, then the events after it;
    /// it decides under the default settings.
    pub async fn recover(stream: StreamName, deps: HostDeps) -> Result<Self, LogError>
    where
        A::Settings: Default,
    {
        Self::recover_with(stream, deps, A::Settings::default()).await
    }

    /// Recovers the aggregate, which then decides under `settings`.
    pub async fn recover_with(
        stream: StreamName,
        deps: HostDeps,
        settings: A::Settings,
    ) -> Result<Self, LogError> {
        let name = stream.to_string();
        let mut core = AggregateCore {
            commands: CommandWindow {
                capacity: deps.config.idempotency_window,
                ..Default::default()
            },
            stream,
            state: A::default(),
            head: StreamHead::empty(),
            rejections: HashMap::new(),
            pending_effects: BTreeMap::new(),
            stale: false,
            last_snapshot: 0,
            deps,
            name,
            settings,
        };
        core.restore_snapshot().await?;
        core.catch_up().await?;
        Ok(core)
    }

    async fn restore_snapshot(&mut self) -> Result<(), LogError> {
        let Some(snap) = self.deps.log.load_snapshot(&self.name).await? else {
            return Ok(());
        };
        let body: SnapshotBody<A> =
            rmp_serde::from_slice(&snap.state).map_err(|e| LogError::BadSnapshot {
                stream: self.name.clone(),
                reason: e.to_string(),
            })?;
        let anchor = self.read_range(snap.seq, snap.seq).await?;
        match anchor.first() {
            Some(e) if e.checksum == snap.checksum => {}
            _ => {
                tracing::warn!(stream = %self.name, seq = snap.seq,
                    "snapshot does not match the log; replaying from the start");
                return Ok(());
            }
        }
        self.state = body.state;
        for r in body.commands {
            self.commands.remember(&r.id, r.first_seq);
            self.commands.remember(&r.id, r.last_seq);
        }
        self.pending_effects = body.pending_effects;
        self.head = StreamHead {
            seq: snap.seq,
            checksum: snap.checksum,
        };
        self.last_snapshot = snap.seq;
        Ok(())
    }

    /// Folds every stored event after the current head.
    async fn catch_up(&mut self) -> Result<(), LogError> {
        let mut events = self
            .deps
            .log
            .read_stream(&self.name, self.head.seq + 1)
            .await?;
        let replayed = self
            .deps
            .metrics
            .events_replayed
            .with_label_values(&[A::ACTOR.as_str()]);
        while let Some(env) = events.try_next().await? {
            let event = self.decode(&env)?;
            self.fold(&env, &event);
            replayed.inc();
        }
        self.stale = false;
        Ok(())
    }

    fn decode(&self, env: &Envelope) -> Result<A::Event, LogError> {
        env.payload.decode().map_err(|e| {
            LogError::Corrupt(IntegrityError::Unreadable {
                stream: self.name.clone(),
                seq: env.seq,
                reason: format!("payload is not a {} event: {e}", A::ACTOR),
            })
        })
    }

    fn fold(&mut self, env: &Envelope, event: &A::Event) {
        self.state = std::mem::take(&mut self.state).evolve(event);
        self.head = StreamHead {
            seq: env.seq,
            checksum: env.checksum.clone(),
        };
        self.commands.remember(&env.causation_id, env.seq);
        if env.causation_id.starts_with("fx-") {
            let cause = &env.causation_id;
            self.pending_effects
                .retain(|_, id| outcome_command_id(id) != *cause);
        }
        if A::wants_effect(event) {
            self.pending_effects.insert(env.seq, env.id.clone());
        }
    }

    /// The stream name, `<actor>/<id>`.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// The current state.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The last seq.
    pub fn seq(&self) -> u64 {
        self.head.seq
    }

    /// Whether the stream is known to hold no event: none folded, and no
    /// failed append that may have landed unseen.
    pub fn is_empty(&self) -> bool {
        self.head.seq == 0 && !self.stale
    }

    /// Answers a state query: the whole view, or one page of it.
    pub fn query(&self, page: Option<&Page>) -> Reply {
        if self.head.seq == 0 {
            return Reply::rejected(&Rejection::new(
                ErrorCode::NotFound,
                format!("{} does not exist", self.name),
            ));
        }
        let view = match page {
            Some(page) => self.state.view_page(page),
            None => self.state.view(),
        };
        Reply::accepted(self.name.clone(), self.head.seq, vec![], view)
    }

    /// Answers a state query after folding whatever other hosts of this
    /// aggregate appended since (one head lookup when nothing changed).
    pub async fn query_fresh(&mut self, page: Option<&Page>) -> Reply {
        match self.is_behind().await {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = self.catch_up().await {
                    return Reply::rejected(&Rejection::from(StepError::from_log(e)));
                }
            }
            Err(e) => return Reply::rejected(&Rejection::from(e)),
        }
        self.query(page)
    }

    /// Runs one command and returns the reply plus the effects to start.
    pub async fn execute(
        &mut self,
        request: CommandRequest,
        correlation_id: Option<String>,
    ) -> (Reply, Vec<EffectJob<A>>) {
        self.submit(Submission::Request(request), correlation_id)
            .await
    }

    /// Runs one command, off the wire or typed.
    pub(crate) async fn submit(
        &mut self,
        submission: Submission<A::Command>,
        correlation_id: Option<String>,
    ) -> (Reply, Vec<EffectJob<A>>) {
        let started = Instant::now();
        let (reply, jobs, outcome) = match self.step(submission, correlation_id).await {
            Ok((reply, jobs, repeated)) => {
                (reply, jobs, if repeated { "repeated" } else { "accepted" })
            }
            Err(StepError::Rejected(r)) => (Reply::rejected(&r), vec![], "rejected"),
            Err(StepError::Failed(r)) => (Reply::rejected(&r), vec![], "failed"),
        };
        let actor = A::ACTOR.as_str();
        let m = &self.deps.metrics;
        m.commands.with_label_values(&[actor, outcome]).inc();
        m.command_seconds
            .with_label_values(&[actor])
            .observe(started.elapsed().as_secs_f64());
        (reply, jobs)
    }

    async fn step(
        &mut self,
        submission: Submission<A::Command>,
        correlation_id: Option<String>,
    ) -> Result<(Reply, Vec<EffectJob<A>>, bool), StepError> {
        // After a failed append the log may hold events this host never
        // folded (the append landed, its answer was lost): fold them, and
        // start the effects they ask for.
        let mut landed = Vec::new();
        if self.stale {
            let before = self.head.seq;
            self.catch_up().await.map_err(StepError::from_log)?;
            landed = self
                .unsettled_effects_after(before)
                .await
                .map_err(StepError::from_log)?;
        }
        let command_id = submission.command_id().map(str::to_string);
        if let Some(reply) = self.recall(command_id.as_deref()).await? {
            return Ok((reply, landed, true));
        }
        let expected_seq = submission.expected_seq();
        let principal = submission.principal();
        // Parsed only now: a repeated id is answered even if its body no
        // longer parses, and a body that does not parse is remembered.
        let result = match submission.into_command::<A>() {
            Ok(command) => {
                let origin = Origin {
                    correlation_id,
                    principal,
                };
                self.decide_and_append(&command, command_id.as_deref(), expected_seq, origin)
                    .await
            }
            Err(rejection) => Err(StepError::Rejected(rejection)),
        };
        if let (Err(StepError::Rejected(r)), Some(id)) = (&result, &command_id) {
            self.remember_rejection(id, r);
        }
        result.map(|(reply, mut jobs)| {
            jobs.extend(landed);
            (reply, jobs, false)
        })
    }

    async fn decide_and_append(
        &mut self,
        command: &A::Command,
        command_id: Option<&str>,
        expected_seq: Option<u64>,
        origin: Origin,
    ) -> Result<(Reply, Vec<EffectJob<A>>), StepError> {
        let causation = command_id
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let correlation = origin.correlation_id.unwrap_or_else(|| causation.clone());
        let principal = origin.principal;
        let mut attempt = 0;
        loop {
            let decided = self
                .check_expected(expected_seq)
                .and_then(|()| self.state.decide_with(&self.settings, command));
            let events = match decided {
                Ok(events) => events,
                Err(rejection) => {
                    // Another host may have moved the aggregate on: never
                    // refuse on stale state.
                    if attempt < self.deps.config.max_conflict_retries && self.is_behind().await? {
                        attempt += 1;
                        self.catch_up().await.map_err(StepError::from_log)?;
                        if let Some(reply) = self.recall(command_id).await? {
                            return Ok((reply, vec![]));
                        }
                        continue;
                    }
                    return Err(StepError::Rejected(rejection));
                }
            };
            if events.is_empty() {
                let reply =
                    Reply::accepted(self.name.clone(), self.head.seq, vec![], A::result(&[]));
                return Ok((reply, vec![]));
            }
            let pending = self.pending(&events, &causation, &correlation, &principal)?;
            match self
                .deps
                .log
                .append(&self.name, self.head.seq, pending)
                .await
            {
                Ok(stored) => return Ok(self.commit(stored, events).await),
                Err(LogError::Conflict { .. })
                    if attempt < self.deps.config.max_conflict_retries =>
                {
                    attempt += 1;
                    conflict_pause(attempt).await;
                    self.catch_up().await.map_err(StepError::from_log)?;
                    if let Some(reply) = self.recall(command_id).await? {
                        return Ok((reply, vec![]));
                    }
                }
                Err(e) => {
                    // The append may have landed before the error: reload first next time.
                    self.stale = true;
                    return Err(StepError::from_log(e));
                }
            }
        }
    }

    /// Whether the log holds events this host has not folded.
    async fn is_behind(&self) -> Result<bool, StepError> {
        let head = self
            .deps
            .log
            .head(&self.name)
            .await
            .map_err(StepError::from_log)?;
        Ok(head.seq != self.head.seq)
    }

    fn check_expected(&self, expected: Option<u64>) -> Result<(), Rejection> {
        match expected {
            Some(e) if e != self.head.seq => Err(Rejection::new(
                ErrorCode::WrongExpectedSeq,
                format!(
                    "expected_seq {e} does not match {}, which is at seq {}",
                    self.name, self.head.seq
                ),
            )),
            _ => Ok(()),
        }
    }

    fn pending(
        &self,
        events: &[A::Event],
        causation: &str,
        correlation: &str,
        principal: &str,
    ) -> Result<Vec<PendingEvent>, StepError> {
        let at = now_micros();
        let pending = events
            .iter()
            .map(|e| {
                let payload = Payload::encode(e).map_err(|err| {
                    StepError::Failed(Rejection::new(
                        ErrorCode::Internal,
                        format!("cannot encode event {}: {err}", A::event_type(e)),
                    ))
                })?;
                Ok(PendingEvent {
                    id: uuid::Uuid::now_v7().to_string(),
                    event_type: A::event_type(e).to_string(),
                    at,
                    causation_id: causation.to_string(),
                    correlation_id: correlation.to_string(),
                    payload,
                    principal: Some(principal.to_string()),
                })
            })
            .collect::<Result<Vec<_>, StepError>>()?;
        self.check_size(&pending)?;
        Ok(pending)
    }

    /// Refuses (`TOO_LARGE`, naming the limit's setting) a batch that one
    /// event or the whole would make too big to store and answer.
    fn check_size(&self, pending: &[PendingEvent]) -> Result<(), StepError> {
        let sizes = pending
            .iter()
            .map(|e| e.payload.as_str().len() + ENVELOPE_BYTES);
        let (event_limit, batch_limit) = (self.deps.event_limit(), self.deps.batch_limit());
        let too_large = |what: String, limit: usize, setting: &str| {
            StepError::Rejected(Rejection::new(
                ErrorCode::TooLarge,
                format!(
                    "{what} bytes, above the limit of {limit} ({setting}): \
                     ask for less (fewer trials, parameters or items) or raise {setting}"
                ),
            ))
        };
        if let Some((event, size)) = pending
            .iter()
            .zip(sizes.clone())
            .find(|(_, n)| *n > event_limit)
        {
            return Err(too_large(
                format!("one {} event would take {size}", event.event_type),
                event_limit,
                "max_event_bytes",
            ));
        }
        let total: usize = sizes.sum();
        if total > batch_limit {
            return Err(too_large(
                format!("the command's {} events would take {total}", pending.len()),
                batch_limit,
                "max_batch_bytes",
            ));
        }
        Ok(())
    }

    /// Folds freshly stored events, publishes them and snapshots if due.
    async fn commit(
        &mut self,
        stored: Vec<Envelope>,
        events: Vec<A::Event>,
    ) -> (Reply, Vec<EffectJob<A>>) {
        let mut jobs = Vec::new();
        for (env, event) in stored.iter().zip(&events) {
            self.fold(env, event);
            if A::wants_effect(event) {
                jobs.push(EffectJob {
                    envelope: env.clone(),
                    event: event.clone(),
                });
            }
        }
        self.deps
            .metrics
            .events_appended
            .with_label_values(&[A::ACTOR.as_str()])
            .inc_by(stored.len() as u64);
        self.publish(&stored).await;
        self.snapshot_if_due().await;
        let result = A::result(&events);
        (
            Reply::accepted(self.name.clone(), self.head.seq, stored, result),
            jobs,
        )
    }

    async fn publish(&self, stored: &[Envelope]) {
        if self.deps.log.publishes_events() {
            return;
        }
        let subject = self.deps.config.subjects.event(&self.stream);
        for env in stored {
            let Ok(body) = Encoding::Json.encode(env) else {
                continue;
            };
            let msg = Message::new(subject.clone(), body)
                .with_header("Content-Type", Encoding::Json.content_type())
                .with_header("Nats-Msg-Id", env.id.clone());
            if let Err(e) = self.deps.bus.publish(msg).await {
                tracing::warn!(stream = %self.name, seq = env.seq, error = %e, "event not published");
            }
        }
    }

    async fn snapshot_if_due(&mut self) {
        let every = self.deps.config.snapshot_every;
        if every == 0 || self.head.seq < self.last_snapshot + every {
            return;
        }
        let body = SnapshotBody {
            state: &self.state,
            commands: self.commands.order.iter().cloned().collect(),
            pending_effects: self.pending_effects.clone(),
        };
        let state = match rmp_serde::to_vec_named(&body) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(stream = %self.name, error = %e, "snapshot not encodable");
                return;
            }
        };
        let snap = Snapshot {
            seq: self.head.seq,
            checksum: self.head.checksum.clone(),
            state,
        };
        match self.deps.log.save_snapshot(&self.name, snap).await {
            Ok(()) => self.last_snapshot = self.head.seq,
            Err(e) => tracing::warn!(stream = %self.name, error = %e, "snapshot not saved"),
        }
    }

    /// The first reply to a command id seen before, rebuilt from the log.
    async fn recall(&mut self, command_id: Option<&str>) -> Result<Option<Reply>, StepError> {
        let Some(id) = command_id else {
            return Ok(None);
        };
        if let Some(reply) = self.rejections.get(id) {
            return Ok(Some(reply.clone()));
        }
        let Some((first, last)) = self.commands.get(id) else {
            return Ok(None);
        };
        let stored = self
            .read_range(first, last)
            .await
            .map_err(StepError::from_log)?;
        let stored: Vec<Envelope> = stored
            .into_iter()
            .filter(|e| e.causation_id == id)
            .collect();
        let events = stored
            .iter()
            .map(|e| self.decode(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StepError::from_log)?;
        let result = A::result(&events);
        Ok(Some(Reply::accepted(
            self.name.clone(),
            last,
            stored,
            result,
        )))
    }

    async fn read_range(&self, first: u64, last: u64) -> Result<Vec<Envelope>, LogError> {
        let events = self.deps.log.read_stream(&self.name, first).await?;
        events
            .try_take_while(|e| futures::future::ready(Ok(e.seq <= last)))
            .try_collect()
            .await
    }

    fn remember_rejection(&mut self, id: &str, rejection: &Rejection) {
        if self.rejections.len() >= REJECTION_MEMORY {
            self.rejections.clear();
        }
        self.rejections
            .insert(id.to_string(), Reply::rejected(rejection));
    }

    /// Effects whose outcome is not recorded (to re-drive after recovery).
    pub async fn unsettled_effects(&self) -> Result<Vec<EffectJob<A>>, LogError> {
        self.unsettled_effects_after(0).await
    }

    /// Unsettled effects of the events after `seq`.
    async fn unsettled_effects_after(&self, seq: u64) -> Result<Vec<EffectJob<A>>, LogError> {
        let mut jobs = Vec::new();
        for (&seq, id) in self.pending_effects.range(seq + 1..) {
            for envelope in self.read_range(seq, seq).await? {
                if &envelope.id == id {
                    let event = self.decode(&envelope)?;
                    jobs.push(EffectJob { envelope, event });
                }
            }
        }
        Ok(jobs)
    }

    /// Forgets an effect whose outcome command changed nothing.
    pub fn settle_effect(&mut self, event_id: &str) {
        self.pending_effects.retain(|_, id| id != event_id);
    }
}

/// Why a command step did not append.
enum StepError {
    /// The command is refused: nothing changes.
    Rejected(Rejection),
    /// The log failed: nothing acknowledged.
    Failed(Rejection),
}

impl StepError {
    fn from_log(e: LogError) -> Self {
        let code = match &e {
            e if e.is_damage() => ErrorCode::Corrupt,
            // Lost every race for the aggregate, or the backend is down:
            // both are worth retrying.
            LogError::Backend(_) | LogError::InUse { .. } | LogError::Conflict { .. } => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        };
        StepError::Failed(Rejection::new(code, e.to_string()))
    }
}

/// Waits a random fraction of `attempt` milliseconds before deciding again
/// after a lost append race: two hosts that raced once would otherwise race
/// again in lock step (at full load a fixed retry lost six times in a row
/// for 1 ask in 6,000).
async fn conflict_pause(attempt: u32) {
    let spread_micros = u64::from(attempt) * 1_000;
    let jitter = uuid::Uuid::new_v4().as_u64_pair().0 % spread_micros.max(1);
    tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
}

impl From<StepError> for Rejection {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Rejected(r) | StepError::Failed(r) => r,
        }
    }
}
