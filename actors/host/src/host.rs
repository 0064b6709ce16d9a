//! The actix actor that hosts one aggregate, and the registry that finds or
//! starts it.
//!
//! Each aggregate is an actor, so its commands are handled one at a time in
//! arrival order while different aggregates proceed in parallel. A command is
//! an [`AtomicResponse`]: the actor takes no other message until the append
//! is durable and the state evolved, which is what "atomic per aggregate"
//! means in the brief. Recovery runs in `started` under `ctx.wait`, so no
//! command is seen before the state is rebuilt.
//!
//! An actor lives only while it is useful. One whose stream is still empty
//! after a command (the command was refused, or changed nothing) leaves the
//! registry at once, so ids that were only ever refused hold no memory; one
//! idle for [`crate::HostConfig::passivate_after`] leaves too (Akka's
//! passivation) and is recovered by its next command. The registry counts
//! the messages on their way to each actor, so an actor leaves only with an
//! empty mailbox and no effect running: nothing sent to it is dropped.

use crate::core::{AggregateCore, EffectJob, HostDeps, Submission};
use crate::effects::{outcome_command_id, EffectHandler};
use crate::Aggregate;
use actix::prelude::*;
use flotilla_messages::{auth, CommandRequest, ErrorCode, Page, Rejection, Reply, StreamName};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Runs a command on the aggregate.
#[derive(Message)]
#[rtype(result = "Reply")]
pub struct Execute {
    /// The command.
    pub request: CommandRequest,
    /// The conversation it belongs to, if the caller knows it.
    pub correlation_id: Option<String>,
}

impl Execute {
    /// A command outside any known conversation.
    pub fn new(request: CommandRequest) -> Self {
        Execute {
            request,
            correlation_id: None,
        }
    }
}

/// Runs a command built in this process (see [`AggregateRegistry::execute_typed`]).
struct Submit<C>(Submission<C>);

impl<C: 'static> Message for Submit<C> {
    type Result = Reply;
}

/// Asks for the aggregate's whole state.
#[derive(Message)]
#[rtype(result = "Reply")]
pub struct Query;

/// Asks for one page of the aggregate's state (a query off the wire), or
/// the whole of it.
#[derive(Message)]
#[rtype(result = "Reply")]
struct QueryPage(Option<Page>);

/// Waits until recovery finished; answers whether it succeeded.
#[derive(Message)]
#[rtype(result = "Result<u64, Rejection>")]
pub struct Recovered;

/// A message the registry sent, with the ticket that counts it as on its
/// way until the actor takes it up.
struct Ticketed<M>(M, Ticket);

impl<M: Message<Result = Reply>> Message for Ticketed<M> {
    type Result = Reply;
}

/// Takes a ticketed message up: the ticket is dropped (the message is no
/// longer on its way) and the message handled as if sent directly.
macro_rules! handle_ticketed {
    ($message:ty) => {
        impl<A: Aggregate> Handler<Ticketed<$message>> for AggregateActor<A> {
            type Result = AtomicResponse<Self, Reply>;

            fn handle(&mut self, msg: Ticketed<$message>, ctx: &mut Context<Self>) -> Self::Result {
                let Ticketed(message, ticket) = msg;
                drop(ticket);
                <Self as Handler<$message>>::handle(self, message, ctx)
            }
        }
    };
}

handle_ticketed!(Execute);
handle_ticketed!(Submit<A::Command>);
handle_ticketed!(QueryPage);

/// Counts one message as on its way to an actor, until dropped.
struct Ticket(Arc<AtomicUsize>);

impl Ticket {
    fn new(in_flight: &Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::SeqCst);
        Ticket(in_flight.clone())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The actix actor hosting one aggregate.
pub struct AggregateActor<A: Aggregate> {
    stream: StreamName,
    deps: HostDeps,
    core: Option<AggregateCore<A>>,
    failure: Option<Rejection>,
    effects: Option<Arc<dyn EffectHandler<A>>>,
    /// Effects started and not yet reported back.
    effects_running: usize,
    /// When the last command or query was answered.
    last_active: Instant,
    /// Takes this actor out of its registry (when it has one).
    retire: Option<Retire>,
    /// The host's settings its decisions are made under.
    settings: A::Settings,
}

/// Takes an actor out of its registry if nothing is on its way to it (or,
/// when forced, whatever is); answers whether it may stop.
type Retire = Box<dyn Fn(bool) -> bool + Send>;

impl<A: Aggregate> AggregateActor<A> {
    /// An actor for `stream` deciding under `settings`; it recovers when started.
    pub fn new(
        stream: StreamName,
        deps: HostDeps,
        effects: Option<Arc<dyn EffectHandler<A>>>,
        settings: A::Settings,
    ) -> Self {
        AggregateActor {
            stream,
            deps,
            core: None,
            failure: None,
            effects,
            effects_running: 0,
            last_active: Instant::now(),
            retire: None,
            settings,
        }
    }

    /// Stops the actor if its registry lets it go (nothing queued for it)
    /// and no effect of it is running. Without a registry it stays.
    fn leave_if_unused(&mut self, ctx: &mut Context<Self>) {
        if self.effects_running > 0 {
            return;
        }
        if self.retire.as_ref().is_some_and(|retire| retire(false)) {
            ctx.stop();
        }
    }

    /// Leaves when the stream is still empty: the id was refused or its
    /// command changed nothing, and keeping an actor for it only costs memory.
    fn leave_if_empty(&mut self, ctx: &mut Context<Self>) {
        if self.core.as_ref().is_some_and(AggregateCore::is_empty) {
            self.leave_if_unused(ctx);
        }
    }

    /// Checks for idleness every so often and leaves after `after` of it.
    fn passivate_after(&mut self, after: Duration, ctx: &mut Context<Self>) {
        let every = (after / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
        ctx.run_interval(every, move |act, ctx| {
            if act.last_active.elapsed() >= after {
                act.leave_if_unused(ctx);
            }
        });
    }

    fn unavailable(&self) -> Reply {
        let rejection = self.failure.clone().unwrap_or_else(|| {
            Rejection::new(
                ErrorCode::Unavailable,
                format!("{} is not recovered", self.stream),
            )
        });
        Reply::rejected(&rejection)
    }

    /// Marks this aggregate corrupt for `/readyz` and the metric; it stays
    /// up, answering `CORRUPT`, so that it is not recovered again and again.
    fn set_aside(&self, reason: &str) {
        let metrics = &self.deps.metrics;
        if metrics
            .corrupt_streams
            .mark(&self.stream.to_string(), reason)
        {
            metrics
                .aggregates_corrupt
                .with_label_values(&[A::ACTOR.as_str()])
                .inc();
        }
    }

    fn spawn_effects(&mut self, jobs: Vec<EffectJob<A>>, ctx: &mut Context<Self>) {
        let Some(handler) = self.effects.clone() else {
            return;
        };
        for job in jobs {
            let handler = handler.clone();
            let me = ctx.address();
            self.effects_running += 1;
            ctx.spawn(
                async move {
                    let outcome = handler.run(&job.envelope, &job.event).await;
                    report_outcome(me, job.envelope.id, outcome).await;
                }
                .into_actor(self)
                .map(|(), act, _| act.effects_running -= 1),
            );
        }
    }
}

/// How often an effect's outcome is offered again when the log fails.
const OUTCOME_ATTEMPTS: u32 = 8;

/// Feeds an effect's outcome back as a command. The effect is settled
/// (forgotten) only when the outcome is recorded, changes nothing, or is
/// refused by the domain; when the log fails it stays pending, is offered
/// again with backoff, and is re-driven at the next recovery.
async fn report_outcome<A: Aggregate>(
    me: Addr<AggregateActor<A>>,
    event_id: String,
    outcome: Option<serde_json::Value>,
) {
    let command_id = outcome_command_id(&event_id);
    let request = match outcome.map(|v| CommandRequest::from_value(v, Some(&command_id))) {
        Some(Ok(mut request)) => {
            request.command_id = Some(command_id);
            request.by(auth::CONTROL_PLANE)
        }
        Some(Err(r)) => {
            tracing::warn!(event = %event_id, error = %r, "effect outcome is not a command");
            me.do_send(Settle(event_id));
            return;
        }
        None => {
            me.do_send(Settle(event_id));
            return;
        }
    };
    let mut pause = std::time::Duration::from_millis(100);
    for _ in 0..OUTCOME_ATTEMPTS {
        let Ok(reply) = me.send(Execute::new(request.clone())).await else {
            return;
        };
        if !is_log_failure(&reply) {
            if reply.events.is_none_or(|e| e.is_empty()) {
                me.do_send(Settle(event_id));
            }
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
    }
    tracing::warn!(event = %event_id, "effect outcome not recorded; it is re-driven at the next recovery");
}

/// Whether a reply failed for the log's sake rather than the domain's.
fn is_log_failure(reply: &Reply) -> bool {
    let code = reply.error.as_ref().and_then(|e| ErrorCode::parse(&e.code));
    matches!(
        code,
        Some(ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::Corrupt)
    )
}

/// Forgets an effect whose outcome changed nothing.
#[derive(Message)]
#[rtype(result = "()")]
struct Settle(String);

impl<A: Aggregate> Handler<Settle> for AggregateActor<A> {
    type Result = ();
    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) {
        if let Some(core) = self.core.as_mut() {
            core.settle_effect(&msg.0);
        }
    }
}

impl<A: Aggregate> Actor for AggregateActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let stream = self.stream.clone();
        let deps = self.deps.clone();
        let settings = self.settings.clone();
        let recovery = async move {
            let core = AggregateCore::<A>::recover_with(stream, deps, settings).await?;
            let jobs = core.unsettled_effects().await?;
            Ok::<_, flotilla_bus::LogError>((core, jobs))
        };
        ctx.wait(
            recovery
                .into_actor(self)
                .map(|outcome, act, ctx| match outcome {
                    Ok((core, jobs)) => {
                        act.core = Some(core);
                        act.deps.metrics.aggregates.inc();
                        act.spawn_effects(jobs, ctx);
                        if let Some(after) = act.deps.config.passivate_after {
                            act.passivate_after(after, ctx);
                        }
                    }
                    Err(e) => {
                        tracing::error!(stream = %act.stream, error = %e, "recovery failed");
                        let corrupt = e.is_damage();
                        let code = if corrupt {
                            ErrorCode::Corrupt
                        } else {
                            ErrorCode::Unavailable
                        };
                        let message = format!("{}: {e}", act.stream);
                        if corrupt {
                            act.set_aside(&message);
                        }
                        act.failure = Some(Rejection::new(code, message));
                        if !corrupt {
                            // A passing failure: make way for a fresh actor
                            // that recovers again; what is queued is answered
                            // UNAVAILABLE.
                            if let Some(retire) = &act.retire {
                                retire(true);
                            }
                            ctx.stop();
                        }
                    }
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.core.is_some() {
            self.deps.metrics.aggregates.dec();
        }
    }
}

impl<A: Aggregate> AggregateActor<A> {
    /// Runs `work` on the core with the mailbox held (no other message is
    /// handled until it is done), puts the core back and starts the effects
    /// it returns. Without a core (recovery failed) it answers unavailable.
    fn with_core<Work, Done>(&mut self, work: Work) -> AtomicResponse<Self, Reply>
    where
        Work: FnOnce(AggregateCore<A>) -> Done,
        Done: std::future::Future<Output = (AggregateCore<A>, Reply, Vec<EffectJob<A>>)> + 'static,
    {
        let Some(core) = self.core.take() else {
            let reply = self.unavailable();
            return AtomicResponse::new(Box::pin(actix::fut::ready(reply)));
        };
        AtomicResponse::new(Box::pin(work(core).into_actor(self).map(
            |(core, reply, jobs), act, ctx| {
                act.core = Some(core);
                act.last_active = Instant::now();
                act.spawn_effects(jobs, ctx);
                act.leave_if_empty(ctx);
                reply
            },
        )))
    }

    /// Runs one command with the mailbox held.
    fn submit(
        &mut self,
        submission: Submission<A::Command>,
        correlation_id: Option<String>,
    ) -> AtomicResponse<Self, Reply> {
        self.with_core(|mut core| async move {
            let (reply, jobs) = core.submit(submission, correlation_id).await;
            (core, reply, jobs)
        })
    }
}

impl<A: Aggregate> Handler<Execute> for AggregateActor<A> {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: Execute, _: &mut Context<Self>) -> Self::Result {
        self.submit(Submission::Request(msg.request), msg.correlation_id)
    }
}

impl<A: Aggregate> Handler<Submit<A::Command>> for AggregateActor<A> {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: Submit<A::Command>, _: &mut Context<Self>) -> Self::Result {
        self.submit(msg.0, None)
    }
}

impl<A: Aggregate> Handler<Query> for AggregateActor<A> {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, _: Query, _: &mut Context<Self>) -> Self::Result {
        self.query(None)
    }
}

impl<A: Aggregate> Handler<QueryPage> for AggregateActor<A> {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: QueryPage, _: &mut Context<Self>) -> Self::Result {
        self.query(msg.0)
    }
}

impl<A: Aggregate> AggregateActor<A> {
    /// Answers the state, or a page of it, with the mailbox held.
    fn query(&mut self, page: Option<Page>) -> AtomicResponse<Self, Reply> {
        self.with_core(|mut core| async move {
            let reply = core.query_fresh(page.as_ref()).await;
            (core, reply, Vec::new())
        })
    }
}

impl<A: Aggregate> Handler<Recovered> for AggregateActor<A> {
    type Result = Result<u64, Rejection>;
    fn handle(&mut self, _: Recovered, _: &mut Context<Self>) -> Self::Result {
        match (&self.core, &self.failure) {
            (Some(core), _) => Ok(core.seq()),
            (None, Some(f)) => Err(f.clone()),
            (None, None) => Err(Rejection::new(ErrorCode::Unavailable, "not recovered")),
        }
    }
}

/// How often start-up recovery of one aggregate is tried.
const RECOVERY_ATTEMPTS: u32 = 4;

/// A hosted actor, and how many messages are on their way to it.
struct Entry<A: Aggregate> {
    addr: Addr<AggregateActor<A>>,
    generation: u64,
    in_flight: Arc<AtomicUsize>,
}

/// The hosted actors by aggregate id.
type Actors<A> = Mutex<HashMap<String, Entry<A>>>;

/// Finds the actor of an aggregate, starting (and so recovering) it on first
/// use, and lets it go when it is no longer needed (see the module docs).
pub struct AggregateRegistry<A: Aggregate> {
    deps: HostDeps,
    effects: Option<Arc<dyn EffectHandler<A>>>,
    /// The host's settings every aggregate here decides under.
    settings: A::Settings,
    actors: Arc<Actors<A>>,
    generations: AtomicU64,
    /// Where actors run (see [`crate::HostConfig::arbiters`]); empty: here.
    arbiters: Vec<actix::Arbiter>,
}

impl<A: Aggregate> AggregateRegistry<A> {
    /// An empty registry whose aggregates decide under the default
    /// settings. With [`crate::HostConfig::arbiters`] above 0 it starts
    /// that many arbiter threads (inside an actix system).
    pub fn new(deps: HostDeps, effects: Option<Arc<dyn EffectHandler<A>>>) -> Arc<Self>
    where
        A::Settings: Default,
    {
        Self::with_settings(deps, effects, A::Settings::default())
    }

    /// An empty registry whose aggregates decide under `settings` (see
    /// [`Aggregate::Settings`]); otherwise as [`Self::new`].
    pub fn with_settings(
        deps: HostDeps,
        effects: Option<Arc<dyn EffectHandler<A>>>,
        settings: A::Settings,
    ) -> Arc<Self> {
        let arbiters = (0..deps.config.arbiters)
            .map(|_| actix::Arbiter::new())
            .collect();
        Arc::new(AggregateRegistry {
            deps,
            effects,
            settings,
            actors: Arc::new(Mutex::new(HashMap::new())),
            generations: AtomicU64::new(0),
            arbiters,
        })
    }

    /// Which of the registry's arbiters hosts aggregate `id` (by a hash of
    /// it); `None` when they all run on the caller's.
    pub fn arbiter_of(&self, id: &str) -> Option<usize> {
        use std::hash::{Hash, Hasher};
        if self.arbiters.is_empty() {
            return None;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        Some(hasher.finish() as usize % self.arbiters.len())
    }

    /// Starts `actor` on the arbiter its id falls to, or here.
    fn start(&self, id: &str, actor: AggregateActor<A>) -> Addr<AggregateActor<A>> {
        match self.arbiter_of(id) {
            Some(i) => AggregateActor::start_in_arbiter(&self.arbiters[i].handle(), move |_| actor),
            None => actor.start(),
        }
    }

    /// The actor hosting aggregate `id` (must run inside an actix system).
    ///
    /// A message sent on the address directly is not counted as on its way:
    /// the actor may passivate before it arrives, and it is then answered
    /// with a closed mailbox. [`Self::execute`] and [`Self::query`] count.
    pub fn get(&self, id: &str) -> Result<Addr<AggregateActor<A>>, Rejection> {
        self.with_entry(id, |entry| entry.addr.clone())
    }

    /// The event log the aggregates live in (to read other streams of it).
    pub fn log(&self) -> &Arc<dyn flotilla_bus::EventLog> {
        &self.deps.log
    }

    /// How many actors are hosted now.
    pub fn hosted(&self) -> usize {
        lock(&self.actors).len()
    }

    /// Runs `f` on the entry of `id`, starting its actor if there is none.
    fn with_entry<T>(&self, id: &str, f: impl FnOnce(&Entry<A>) -> T) -> Result<T, Rejection> {
        let stream = stream_of::<A>(id)?;
        let mut actors = lock(&self.actors);
        if let Some(entry) = actors.get(id).filter(|e| e.addr.connected()) {
            return Ok(f(entry));
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let mut actor = AggregateActor::new(
            stream,
            self.deps.clone(),
            self.effects.clone(),
            self.settings.clone(),
        );
        actor.retire = Some(retirement(&self.actors, id, generation));
        let entry = Entry {
            addr: self.start(id, actor),
            generation,
            in_flight: Arc::new(AtomicUsize::new(0)),
        };
        let out = f(&entry);
        actors.insert(id.to_string(), entry);
        Ok(out)
    }

    /// The actor of `id` and a ticket counting one message as on its way
    /// to it until the actor takes it up, so it does not leave before.
    fn ticketed(&self, id: &str) -> Result<(Addr<AggregateActor<A>>, Ticket), Rejection> {
        self.with_entry(id, |entry| {
            (entry.addr.clone(), Ticket::new(&entry.in_flight))
        })
    }

    /// Runs `request` on aggregate `id`, starting its actor if needed.
    ///
    /// The command is queued by this call, not when the future is awaited
    /// (unless the mailbox is full), so commands keep the order of the
    /// calls. The future answers the reply; an invalid id or a stopped
    /// actor is a rejection.
    pub fn execute(
        &self,
        id: &str,
        request: CommandRequest,
        correlation_id: Option<String>,
    ) -> impl Future<Output = Reply> + Send + 'static {
        let message = Execute {
            request,
            correlation_id,
        };
        let sent = self
            .ticketed(id)
            .map(|(addr, ticket)| addr.send(Ticketed(message, ticket)));
        answer(sent)
    }

    /// Runs a command built in this process on aggregate `id` (no JSON in
    /// between), idempotent under `command_id` when given; otherwise as
    /// [`Self::execute`].
    pub fn execute_typed(
        &self,
        id: &str,
        command: A::Command,
        command_id: Option<String>,
    ) -> impl Future<Output = Reply> + Send + 'static {
        let sent = Submission::typed(command, command_id).and_then(|submission| {
            let (addr, ticket) = self.ticketed(id)?;
            Ok(addr.send(Ticketed(Submit(submission), ticket)))
        });
        answer(sent)
    }

    /// The whole state of aggregate `id`: `NOT_FOUND` without starting
    /// anything when it is neither hosted nor has events in the log.
    pub async fn query(&self, id: &str) -> Reply {
        self.query_page(id, None).await
    }

    /// The state of aggregate `id`, or one page of it (see [`Page`]), as
    /// [`Self::query`].
    pub async fn query_page(&self, id: &str, page: Option<Page>) -> Reply {
        match self.exists(id).await {
            Ok(true) => {
                let sent = self
                    .ticketed(id)
                    .map(|(addr, ticket)| addr.send(Ticketed(QueryPage(page), ticket)));
                answer(sent).await
            }
            Ok(false) => Reply::rejected(&Rejection::new(
                ErrorCode::NotFound,
                format!("{}/{id} does not exist", A::ACTOR),
            )),
            Err(rejection) => Reply::rejected(&rejection),
        }
    }

    /// Whether aggregate `id` is hosted or has events in the log.
    pub async fn exists(&self, id: &str) -> Result<bool, Rejection> {
        let stream = stream_of::<A>(id)?;
        let hosted = lock(&self.actors)
            .get(id)
            .is_some_and(|e| e.addr.connected());
        if hosted {
            return Ok(true);
        }
        let head = self
            .deps
            .log
            .head(&stream.to_string())
            .await
            .map_err(|e| Rejection::new(ErrorCode::Unavailable, e.to_string()))?;
        Ok(head.seq > 0)
    }

    /// The ids of the aggregates in the log (and any started since).
    pub async fn ids(&self) -> Result<Vec<String>, flotilla_bus::LogError> {
        let prefix = format!("{}/", A::ACTOR);
        let mut ids: Vec<String> = self
            .deps
            .log
            .streams()
            .await?
            .into_iter()
            .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Starts and recovers every aggregate that has events, re-driving their
    /// unsettled effects. Returns how many were recovered.
    ///
    /// An aggregate whose stream is corrupt is set aside (it answers
    /// `CORRUPT`, naming the stream and seq, and is listed in the metrics'
    /// `corrupt_streams`) and the others recover: one bad record does not
    /// stop the control plane. Any other failure, after retries, does.
    pub async fn recover_all(&self) -> Result<usize, Rejection> {
        let ids = self
            .ids()
            .await
            .map_err(|e| Rejection::new(ErrorCode::Unavailable, e.to_string()))?;
        let mut recovered = 0;
        for id in &ids {
            match self.recover_one(id).await {
                Ok(_) => recovered += 1,
                Err(r) if r.code == ErrorCode::Corrupt => {
                    tracing::error!(error = %r.message, "aggregate set aside; the others serve (run `flotilla audit`)");
                }
                Err(r) => return Err(r),
            }
        }
        Ok(recovered)
    }

    /// Recovers one aggregate, trying again after a passing failure.
    async fn recover_one(&self, id: &str) -> Result<u64, Rejection> {
        let mut outcome = Err(Rejection::new(ErrorCode::Unavailable, "not tried"));
        for attempt in 0..RECOVERY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
            outcome = match self.get(id)?.send(Recovered).await {
                Ok(result) => result,
                Err(e) => Err(Rejection::new(ErrorCode::Unavailable, e.to_string())),
            };
            match &outcome {
                Err(r) if r.code == ErrorCode::Unavailable => continue,
                _ => return outcome,
            }
        }
        outcome
    }
}

/// The stream of aggregate `id`, or `INVALID_ID`.
fn stream_of<A: Aggregate>(id: &str) -> Result<StreamName, Rejection> {
    StreamName::new(A::ACTOR, id).map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the actor of `id` (started as `generation`) takes itself out of the
/// registry: only if the entry is still its own and, unless forced, nothing
/// is on its way to it. An entry that is no longer its own lets it stop.
fn retirement<A: Aggregate>(actors: &Arc<Actors<A>>, id: &str, generation: u64) -> Retire {
    let actors: Weak<Actors<A>> = Arc::downgrade(actors);
    let id = id.to_string();
    Box::new(move |force| {
        let Some(actors) = actors.upgrade() else {
            return true;
        };
        let mut actors = lock(&actors);
        match actors.get(&id) {
            Some(e) if e.generation == generation => {
                if !force && e.in_flight.load(Ordering::SeqCst) > 0 {
                    return false;
                }
                actors.remove(&id);
                true
            }
            _ => true,
        }
    })
}

impl<A: Aggregate> Drop for AggregateRegistry<A> {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// The reply to a command handed to an actor (or refused before that).
async fn answer<F>(sent: Result<F, Rejection>) -> Reply
where
    F: Future<Output = Result<Reply, MailboxError>>,
{
    match sent {
        Ok(reply) => reply.await.unwrap_or_else(mailbox_closed),
        Err(rejection) => Reply::rejected(&rejection),
    }
}

/// The reply when an actor stopped before answering.
pub(crate) fn mailbox_closed(e: MailboxError) -> Reply {
    Reply::rejected(&Rejection::new(ErrorCode::Unavailable, e.to_string()))
}
