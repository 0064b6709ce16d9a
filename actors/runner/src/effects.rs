//! What a study run's events make happen: commands to the study and to its
//! queue, sent over the bus (so the solver and the scheduler may live in
//! this process or in others), and their outcomes fed back to the run.
//!
//! Every command sent carries an id derived from the run event that asked
//! for it (`run-<event id>`, [`derived_command_id`]), so an effect re-driven after a crash asks,
//! submits or tells nothing twice: the study or queue answers the first
//! reply again. A transport failure (no responder yet, a timeout, an
//! unavailable log) is retried with a growing pause until it gets an
//! answer; a refusal by the domain is an outcome like any other.

use crate::StudyRun;
use async_trait::async_trait;
use flotilla_bus::{Bus, Message};
use flotilla_host::{derived_command_id, Clock, EffectHandler};
use flotilla_messages::auth::{CommandSigner, CONTROL_PLANE, PRINCIPAL_HEADER};
use flotilla_messages::scheduler::retain_all;
use flotilla_messages::solver::{MAX_ASK, MAX_ASK_VALUES};
use flotilla_messages::study_run::{JobEnd, RunEvent, RunSpec, RunTrial};
use flotilla_messages::{Actor, Encoding, Envelope, ErrorCode, Reply, StreamName, Subjects};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long one command to a peer may take before it is sent again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two tries of a command that got no answer.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Commands and queries to the study's solver and scheduler, as the
/// control plane.
#[derive(Clone)]
pub struct Peers {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    signer: Option<Arc<CommandSigner>>,
}

impl Peers {
    /// Peers on `bus`; with `signer`, commands are signed (a NATS bus that
    /// believes only signatures), else marked as the control plane's.
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, signer: Option<Arc<CommandSigner>>) -> Self {
        Peers {
            bus,
            subjects,
            signer,
        }
    }

    /// Sends `body` to `<actor>/<id>` under `command_id` and returns the
    /// reply, trying again until some answer comes back that is not a
    /// passing failure.
    pub async fn command(
        &self,
        actor: Actor,
        id: &str,
        mut body: Value,
        command_id: &str,
    ) -> Reply {
        body["command_id"] = json!(command_id);
        let subject = match StreamName::new(actor, id) {
            Ok(stream) => self.subjects.command(&stream),
            Err(e) => return refused(&e.to_string()),
        };
        self.until_answered(subject, body).await
    }

    /// The state of `<actor>/<id>` (a `NOT_FOUND` reply when it does not exist).
    pub async fn query(&self, actor: Actor, id: &str) -> Reply {
        self.query_page(actor, id, json!({})).await
    }

    /// One page of the state of `<actor>/<id>` (`page`: `{after, limit}`).
    pub async fn query_page(&self, actor: Actor, id: &str, page: Value) -> Reply {
        let subject = match StreamName::new(actor, id) {
            Ok(stream) => self.subjects.query(&stream),
            Err(e) => return refused(&e.to_string()),
        };
        self.until_answered(subject, page).await
    }

    async fn until_answered(&self, subject: String, body: Value) -> Reply {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.once(&subject, &body).await {
                Ok(reply) if !is_passing(&reply) => return reply,
                Ok(reply) => {
                    tracing::debug!(%subject, error = ?reply.error, "peer unavailable; trying again")
                }
                Err(e) => tracing::debug!(%subject, error = %e, "no answer; trying again"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    async fn once(&self, subject: &str, body: &Value) -> Result<Reply, String> {
        let payload = Encoding::Json.encode(body).map_err(|e| e.to_string())?;
        let mut msg = Message::new(subject.to_string(), payload)
            .with_header("Content-Type", Encoding::Json.content_type());
        if let Some(id) = body["command_id"].as_str() {
            msg = msg.with_header("Nats-Msg-Id", id);
        }
        let msg = match &self.signer {
            Some(signer) => msg.signed_by(signer, None),
            None => msg.with_header(PRINCIPAL_HEADER, CONTROL_PLANE),
        };
        let answer = self
            .bus
            .request(msg, REQUEST_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Encoding::sniff(&answer.payload)
            .decode::<Reply>(&answer.payload)
            .map_err(|e| format!("unreadable reply: {e}"))
    }
}

/// A reply that says "not now" rather than "no".
fn is_passing(reply: &Reply) -> bool {
    let code = reply.error.as_ref().and_then(|e| ErrorCode::parse(&e.code));
    matches!(
        code,
        Some(ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal)
    )
}

fn refused(message: &str) -> Reply {
    Reply::rejected(&flotilla_messages::Rejection::invalid(message.to_string()))
}

fn refusal(reply: &Reply) -> Option<String> {
    match (&reply.error, reply.ok) {
        (_, true) => None,
        (Some(e), false) => Some(format!("{}: {}", e.code, e.message)),
        (None, false) => Some("refused".into()),
    }
}

fn code_of(reply: &Reply) -> &str {
    reply.error.as_ref().map_or("", |e| e.code.as_str())
}

/// Runs a study run's effects against its peers.
pub struct RunEffects {
    peers: Peers,
    clock: Clock,
}

impl RunEffects {
    /// Effects through `peers`, stamping asks and renewals with `clock`.
    pub fn new(peers: Peers, clock: Clock) -> Arc<Self> {
        Arc::new(RunEffects { peers, clock })
    }

    /// Checks the study and configures its queue.
    async fn start(&self, study: &str, spec: &RunSpec, id: &str) -> Value {
        let reply = self.peers.query(Actor::Solver, study).await;
        if !reply.ok {
            let reason = match code_of(&reply) {
                "NOT_FOUND" => format!("study {study} does not exist (create_study first)"),
                _ => format!("study {study}: {}", refusal(&reply).unwrap_or_default()),
            };
            return json!({"type": "run_refused", "reason": reason});
        }
        let view = reply.result.unwrap_or_default();
        let budget = view["config"]["budget"].as_u64().unwrap_or(0);
        let maximize = view["config"]["direction"] == "maximize";
        let parameters = view["config"]["bounds"]
            .as_object()
            .map_or(1, |b| b.len().max(1));
        let max_ask = (MAX_ASK_VALUES / parameters).clamp(1, MAX_ASK as usize);
        let mut configure = json!({"type": "configure_queue", "concurrency": spec.parallel,
            "executor": spec.executor, "retain_finished": retain_all(budget)});
        if let Some(pool) = &spec.pool {
            configure["pool"] = json!(pool);
        }
        let reply = self
            .peers
            .command(Actor::Scheduler, study, configure, id)
            .await;
        match refusal(&reply) {
            Some(why) => json!({"type": "run_refused", "reason": format!("queue {study}: {why}")}),
            None => json!({"type": "queue_ready", "budget": budget, "maximize": maximize,
                           "max_ask": max_ask}),
        }
    }

    async fn ask(&self, study: &str, request: u64, n: u32, id: &str) -> Value {
        let ask = json!({"type": "ask", "n": n, "now": (self.clock)()});
        let reply = self.peers.command(Actor::Solver, study, ask, id).await;
        if let Some(why) = refusal(&reply) {
            return json!({"type": "trials_received", "request": request, "trials": [], "refused": why});
        }
        let trials: Vec<RunTrial> = reply
            .result
            .as_ref()
            .and_then(|r| r["trials"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(RunTrial {
                    trial_id: t["trial_id"].as_str()?.to_string(),
                    params: serde_json::from_value(t["params"].clone()).ok()?,
                })
            })
            .collect();
        json!({"type": "trials_received", "request": request, "trials": trials})
    }

    async fn tell(&self, study: &str, trial_id: &str, end: &JobEnd, id: &str) -> Value {
        let command = match end {
            JobEnd::Succeeded { value } => {
                json!({"type": "tell", "trial_id": trial_id, "value": value})
            }
            JobEnd::Failed { reason } => {
                json!({"type": "fail", "trial_id": trial_id, "reason": reason})
            }
            JobEnd::Cancelled { reason } => json!({"type": "fail", "trial_id": trial_id,
                "reason": reason.clone().unwrap_or_else(|| "cancelled".into())}),
        };
        let reply = self.peers.command(Actor::Solver, study, command, id).await;
        // A fail the study will not take (the trial was told) changes nothing.
        let refused = match end {
            JobEnd::Succeeded { .. } => refusal(&reply),
            _ => None,
        };
        if let Some(why) = &refused {
            // A value the study refuses still ends the trial there, as failed,
            // or the study would wait for it forever.
            let fail = json!({"type": "fail", "trial_id": trial_id,
                "reason": format!("the study refused the result: {why}")});
            let _ = self
                .peers
                .command(Actor::Solver, study, fail, &format!("{id}-f"))
                .await;
        }
        json!({"type": "result_recorded", "trial_id": trial_id, "refused": refused})
    }

    async fn cancel(
        &self,
        study: &str,
        trial_id: &str,
        job_id: &str,
        why: &str,
        id: &str,
    ) -> Value {
        let cancel = json!({"type": "cancel", "job_id": job_id, "reason": why});
        let reply = self
            .peers
            .command(Actor::Scheduler, study, cancel, id)
            .await;
        if let Some(why) = refusal(&reply) {
            tracing::debug!(study, job_id, %why, "cancel refused (the job had ended)");
        }
        json!({"type": "cancel_sent", "trial_id": trial_id})
    }
}

#[async_trait]
impl EffectHandler<StudyRun> for RunEffects {
    async fn run(&self, envelope: &Envelope, event: &RunEvent) -> Option<Value> {
        let study = envelope.stream.split_once('/')?.1;
        let id = derived_command_id("run", &envelope.id);
        let outcome = match event {
            RunEvent::RunStarted { spec } => self.start(study, spec, &id).await,
            RunEvent::TrialsRequested { request, n } => self.ask(study, *request, *n, &id).await,
            RunEvent::JobRequested {
                trial_id,
                job_id,
                spec,
            } => {
                let mut spec = spec.as_ref().clone();
                spec.study = Some(study.to_string());
                let submit = json!({"type": "submit", "job_id": job_id, "spec": spec});
                let reply = self
                    .peers
                    .command(Actor::Scheduler, study, submit, &id)
                    .await;
                json!({"type": "job_accepted", "trial_id": trial_id, "job_id": job_id,
                       "refused": refusal(&reply)})
            }
            RunEvent::JobEnded { trial_id, end } => self.tell(study, trial_id, end, &id).await,
            RunEvent::TrialPruned { trial_id, job_id } => {
                self.cancel(study, trial_id, job_id, "pruned", &id).await
            }
            RunEvent::JobCancelRequested {
                trial_id,
                job_id,
                reason,
            } => self.cancel(study, trial_id, job_id, reason, &id).await,
            RunEvent::LeasesDue { trial_ids, now } => {
                let beat = json!({"type": "heartbeat", "trial_ids": trial_ids, "now": now});
                let _ = self.peers.command(Actor::Solver, study, beat, &id).await;
                json!({"type": "leases_renewed", "now": now})
            }
            _ => return None,
        };
        Some(outcome)
    }
}
