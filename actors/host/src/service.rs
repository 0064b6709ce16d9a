//! Puts an actor kind on the bus: its `cmd` and `query` subjects.
//!
//! Subscriptions are in a queue group per actor (`flotilla-<actor>`), so
//! several processes running the same actor share the load. Each command is
//! decoded here (encoding by `Content-Type` or sniffing, id from the subject,
//! idempotency key from `command_id` or `Nats-Msg-Id`), handed to its
//! aggregate's mailbox in arrival order, and answered in the request's
//! encoding. Each command is attributed first ([`CommandTrust`]): a command
//! the trust policy refuses reaches no aggregate.

use crate::{Aggregate, AggregateRegistry, CommandTrust};
use flotilla_bus::{Bus, BusError, Message};
use flotilla_messages::subjects::SubjectKind;
use flotilla_messages::{CommandRequest, Encoding, ErrorCode, Page, Rejection, Reply, Subjects};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The header that carries a correlation id across commands.
pub const CORRELATION_HEADER: &str = "Flotilla-Correlation-Id";

/// Serves one actor kind's commands and queries on the bus.
pub struct CommandService<A: Aggregate> {
    registry: Arc<AggregateRegistry<A>>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    trust: CommandTrust,
    /// Serve only this aggregate's commands and queries (an inference
    /// worker serves its own deployment), not every aggregate of the kind.
    only: Option<flotilla_messages::StreamName>,
}

impl<A: Aggregate> CommandService<A> {
    /// A service for the aggregates of `registry`, attributing commands as
    /// `trust` says.
    pub fn new(
        registry: Arc<AggregateRegistry<A>>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        trust: CommandTrust,
    ) -> Arc<Self> {
        Self::serving(registry, bus, subjects, trust, None)
    }

    /// A service for one aggregate of `registry`, `stream`: it subscribes
    /// to that aggregate's command and query subjects only (plus the kind's
    /// list query), so a NATS user allowed just those subjects can run it,
    /// and a command for another aggregate never reaches this process.
    pub fn for_one(
        registry: Arc<AggregateRegistry<A>>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        trust: CommandTrust,
        stream: flotilla_messages::StreamName,
    ) -> Arc<Self> {
        Self::serving(registry, bus, subjects, trust, Some(stream))
    }

    fn serving(
        registry: Arc<AggregateRegistry<A>>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        trust: CommandTrust,
        only: Option<flotilla_messages::StreamName>,
    ) -> Arc<Self> {
        Arc::new(CommandService {
            registry,
            bus,
            subjects,
            trust,
            only,
        })
    }

    /// Subscribes and serves until the bus closes or the returned tasks are
    /// aborted. Must run inside an actix system. Abort (and await) the tasks
    /// before the runtime stops, so that the subscriptions are dropped while
    /// their client can still unsubscribe.
    pub async fn start(self: Arc<Self>) -> Result<Vec<JoinHandle<()>>, BusError> {
        let group = format!("flotilla-{}", A::ACTOR);
        let (commands_subject, queries_subject) = match &self.only {
            Some(stream) => (self.subjects.command(stream), self.subjects.query(stream)),
            None => (
                self.subjects.commands_of(A::ACTOR),
                self.subjects.queries_of(A::ACTOR),
            ),
        };
        let mut commands = self.bus.queue_subscribe(&commands_subject, &group).await?;
        let mut queries = self.bus.queue_subscribe(&queries_subject, &group).await?;
        let mut lists = self
            .bus
            .queue_subscribe(&self.subjects.query_list(A::ACTOR), &group)
            .await?;
        let me = self.clone();
        let serve_commands = actix::spawn(async move {
            while let Some(msg) = commands.next().await {
                me.dispatch(msg);
            }
        });
        let me = self.clone();
        let serve_queries = actix::spawn(async move {
            while let Some(msg) = queries.next().await {
                me.dispatch(msg);
            }
        });
        let me = self;
        let serve_lists = actix::spawn(async move {
            while let Some(msg) = lists.next().await {
                let answer = me.clone().list();
                me.answer(msg, Encoding::Json, answer);
            }
        });
        Ok(vec![serve_commands, serve_queries, serve_lists])
    }

    /// Routes one message to its aggregate now (keeping arrival order) and
    /// replies when the aggregate answers.
    fn dispatch(self: &Arc<Self>, msg: Message) {
        let encoding = Encoding::detect(msg.header("Content-Type"), &msg.payload);
        let reply_encoding = encoding.as_ref().copied().unwrap_or(Encoding::Json);
        let answer = match encoding {
            Ok(enc) => self.route(&msg, enc),
            Err(e) => ready(Rejection::new(ErrorCode::MalformedBody, e.to_string())),
        };
        self.answer(msg, reply_encoding, answer);
    }

    fn route(&self, msg: &Message, encoding: Encoding) -> BoxFuture<'static, Reply> {
        let Some(parsed) = self.subjects.parse(&msg.subject) else {
            return ready(Rejection::new(
                ErrorCode::InvalidId,
                format!("bad subject {}", msg.subject),
            ));
        };
        let id = parsed.id.unwrap_or_default();
        if parsed.kind == SubjectKind::Query {
            return match Page::parse(&msg.payload) {
                Ok(page) => self.query(id, page),
                Err(r) => ready(r),
            };
        }
        let now = chrono::Utc::now().timestamp_micros();
        let principal = match self.trust.principal(msg, now) {
            Ok(p) => p,
            Err(r) => return ready(r),
        };
        let request =
            match CommandRequest::decode(encoding, &msg.payload, msg.header("Nats-Msg-Id")) {
                Ok(r) => r.by(principal),
                Err(r) => return ready(r),
            };
        if request.command_id.as_deref().is_some_and(is_reserved_id) {
            return ready(Rejection::new(
                ErrorCode::InvalidId,
                "command ids starting with \"fx-\" are reserved for effect outcomes",
            ));
        }
        let correlation_id = msg.header(CORRELATION_HEADER).map(str::to_string);
        self.registry.execute(&id, request, correlation_id).boxed()
    }

    /// Answers a state query (one page of it) without starting an actor
    /// for an aggregate that does not exist (so queries cannot grow the
    /// registry).
    fn query(&self, id: String, page: Page) -> BoxFuture<'static, Reply> {
        let registry = self.registry.clone();
        async move { registry.query_page(&id, Some(page)).await }.boxed()
    }

    fn list(self: Arc<Self>) -> BoxFuture<'static, Reply> {
        async move {
            match self.registry.ids().await {
                Ok(ids) => Reply::accepted(
                    A::ACTOR.as_str(),
                    ids.len() as u64,
                    vec![],
                    serde_json::json!({ "ids": ids }),
                ),
                Err(e) => Reply::rejected(&Rejection::new(ErrorCode::Unavailable, e.to_string())),
            }
        }
        .boxed()
    }

    fn answer(&self, msg: Message, encoding: Encoding, answer: BoxFuture<'static, Reply>) {
        let Some(reply_to) = msg.reply else { return };
        let bus = self.bus.clone();
        actix::spawn(async move {
            let reply = answer.await;
            let (used, body) = match encoding.encode(&reply) {
                Ok(body) => (encoding, body),
                Err(_) => (
                    Encoding::Json,
                    Encoding::Json.encode(&reply).unwrap_or_default(),
                ),
            };
            let (used, body) = within_limit(bus.max_payload(), used, body);
            let out = Message::new(reply_to, body).with_header("Content-Type", used.content_type());
            if let Err(e) = bus.publish(out).await {
                tracing::warn!(error = %e, "reply not sent");
            }
        });
    }
}

/// The reply as encoded, or a `TOO_LARGE` refusal in its place when it is
/// above the transport's limit (a publish that large would cost the
/// connection, and every other client's replies with it). Commands are kept
/// below it by the batch limit; this catches a state too big to answer whole.
fn within_limit(max: Option<usize>, encoding: Encoding, body: Vec<u8>) -> (Encoding, Vec<u8>) {
    let Some(max) = max.filter(|max| body.len() > max.saturating_sub(4096)) else {
        return (encoding, body);
    };
    let refusal = Reply::rejected(&Rejection::new(
        ErrorCode::TooLarge,
        format!(
            "the reply would take {} bytes, above the transport's max_payload of {max}: \
             query a page of it (after, limit) or less at once",
            body.len()
        ),
    ));
    (
        Encoding::Json,
        Encoding::Json.encode(&refusal).unwrap_or_default(),
    )
}

/// Command ids of this form record effect outcomes; clients may not use them.
fn is_reserved_id(id: &str) -> bool {
    id.starts_with("fx-")
}

fn ready(rejection: Rejection) -> BoxFuture<'static, Reply> {
    futures::future::ready(Reply::rejected(&rejection)).boxed()
}
