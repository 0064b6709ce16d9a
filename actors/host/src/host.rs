//! The actix actor that hosts one aggregate, and the registry that finds or
//! starts it.
//!
//! Each aggregate is an actor, so its commands are handled one at a time in
//! arrival order while different aggregates proceed in parallel. A command is
//! an [`AtomicResponse`]: the actor takes no other message until the append
//! is durable and the state evolved, which is what "atomic per aggregate"
//! means in the brief. Recovery runs in `started` under `ctx.wait`, so no
//! command is seen before the state is rebuilt.

use crate::core::{AggregateCore, EffectJob, HostDeps, Submission};
use crate::effects::{outcome_command_id, EffectHandler};
use crate::Aggregate;
use actix::prelude::*;
use flotilla_messages::{CommandRequest, ErrorCode, Rejection, Reply, StreamName};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

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

/// Asks for the aggregate's state.
#[derive(Message)]
#[rtype(result = "Reply")]
pub struct Query;

/// Waits until recovery finished; answers whether it succeeded.
#[derive(Message)]
#[rtype(result = "Result<u64, Rejection>")]
pub struct Recovered;

/// The actix actor hosting one aggregate.
pub struct AggregateActor<A: Aggregate> {
    stream: StreamName,
    deps: HostDeps,
    core: Option<AggregateCore<A>>,
    failure: Option<Rejection>,
    effects: Option<Arc<dyn EffectHandler<A>>>,
}

impl<A: Aggregate> AggregateActor<A> {
    /// An actor for `stream`; it recovers when started.
    pub fn new(
        stream: StreamName,
        deps: HostDeps,
        effects: Option<Arc<dyn EffectHandler<A>>>,
    ) -> Self {
        AggregateActor {
            stream,
            deps,
            core: None,
            failure: None,
            effects,
        }
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

    fn spawn_effects(&self, jobs: Vec<EffectJob<A>>, ctx: &mut Context<Self>) {
        let Some(handler) = self.effects.clone() else {
            return;
        };
        for job in jobs {
            let handler = handler.clone();
            let me = ctx.address();
            ctx.spawn(
                async move {
                    let outcome = handler.run(&job.envelope, &job.event).await;
                    report_outcome(me, job.envelope.id, outcome).await;
                }
                .into_actor(self),
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
            request
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
        let recovery = async move {
            let core = AggregateCore::<A>::recover(stream, deps).await?;
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
                    }
                    Err(e) => {
                        tracing::error!(stream = %act.stream, error = %e, "recovery failed");
                        let corrupt = matches!(
                            e,
                            flotilla_bus::LogError::Corrupt(_)
                                | flotilla_bus::LogError::Truncated { .. }
                        );
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
                            // A passing failure: answer what is queued, then make
                            // way for a fresh actor that recovers again.
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
                act.spawn_effects(jobs, ctx);
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
        self.with_core(|mut core| async move {
            let reply = core.query_fresh().await;
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

/// Finds the actor of an aggregate, starting (and so recovering) it on first use.
pub struct AggregateRegistry<A: Aggregate> {
    deps: HostDeps,
    effects: Option<Arc<dyn EffectHandler<A>>>,
    actors: Mutex<HashMap<String, Addr<AggregateActor<A>>>>,
}

impl<A: Aggregate> AggregateRegistry<A> {
    /// An empty registry.
    pub fn new(deps: HostDeps, effects: Option<Arc<dyn EffectHandler<A>>>) -> Arc<Self> {
        Arc::new(AggregateRegistry {
            deps,
            effects,
            actors: Mutex::new(HashMap::new()),
        })
    }

    /// The actor hosting aggregate `id` (must run inside an actix system).
    pub fn get(&self, id: &str) -> Result<Addr<AggregateActor<A>>, Rejection> {
        let stream = StreamName::new(A::ACTOR, id)
            .map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))?;
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(addr) = actors.get(id).filter(|a| a.connected()) {
            return Ok(addr.clone());
        }
        let addr = AggregateActor::new(stream, self.deps.clone(), self.effects.clone()).start();
        actors.insert(id.to_string(), addr.clone());
        Ok(addr)
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
        let sent = self.get(id).map(|addr| {
            addr.send(Execute {
                request,
                correlation_id,
            })
        });
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
        let sent = Submission::typed(command, command_id)
            .and_then(|submission| Ok(self.get(id)?.send(Submit(submission))));
        answer(sent)
    }

    /// The actor of aggregate `id` if it exists (hosted, or with events in
    /// the log); `None` otherwise, without starting anything.
    pub async fn find(&self, id: &str) -> Result<Option<Addr<AggregateActor<A>>>, Rejection> {
        let stream = StreamName::new(A::ACTOR, id)
            .map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))?;
        let hosted = {
            let actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
            actors.get(id).filter(|a| a.connected()).cloned()
        };
        if hosted.is_some() {
            return Ok(hosted);
        }
        let head = self
            .deps
            .log
            .head(&stream.to_string())
            .await
            .map_err(|e| Rejection::new(ErrorCode::Unavailable, e.to_string()))?;
        if head.seq == 0 {
            return Ok(None);
        }
        self.get(id).map(Some)
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
