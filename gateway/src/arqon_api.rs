//! ArqonHPO's dashboard API per study, under `/v1/studies/{study}`: an
//! ArqonHPO dashboard client pointed at base URL
//! `http://host:port/v1/studies/<id>` works unchanged (shapes in
//! [`crate::arqon`]).
//!
//! | route | handler | answer |
//! |---|---|---|
//! | `GET …/api/state` | [`state`] | the study (`solver/<id>`'s view) as `{config, history, run_id}`; `run_id` is the id of the study's creation event |
//! | `GET …/api/summary` | [`summary`] | `{run_id, budget, history_len, best, latest}` |
//! | `GET …/api/events?limit=&event=&q=` | [`events`] | the events of `solver/<id>` and `study_run/<id>`, each `{event, stream, seq, timestamp_us, at, principal, data}` |
//! | `GET …/api/actions?limit=` | [`actions`] | the actions the log records: `run_paused`, `run_resumed`, and `candidates_enqueued` with a `rollback_to` |
//! | `POST …/api/actions` | [`post_action`] | `pause`/`resume`: the run's `pause_run`/`resume_run` with the reason; `rollback`: the study's `enqueue` of its best trial's parameters, `rollback_to` that trial; `{"ok": true, "action", "recorded", "stream", "seq"}` |
//!
//! Each action is an event of the log, with the caller's principal, its
//! time and its reason, so `GET …/api/actions` reads them back from the
//! log; an action that changes nothing (pausing a paused run) records
//! nothing (`recorded: false`). A study that does not exist is 404
//! `NOT_FOUND`, and so is pausing or resuming a study that has no run; a
//! rollback of a study without a told trial is 409 `INVALID_STATE`; an
//! unknown action or a bad parameter is 400 `INVALID_FIELD`. Reads need
//! the `query` permission (viewer), actions `command` (operator); the
//! `/v1/` Host/Origin guard applies, and an action's body must be JSON.

use crate::arqon::{
    action_of, event_json, parse_query, Action, ActionAnswer, ActionRequest, ActionsQuery,
    ArqonState, EventsQuery,
};
use crate::{
    as_caller, bus_rejection, error_response, guard, log_error_code, read_body, GatewayState,
};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use flotilla_bus::Message;
use flotilla_messages::{Actor, Envelope, Rejection, Reply, StreamName};
use flotilla_messages::{Encoding, ErrorCode};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

/// `GET /v1/studies/{study}/api/state`.
pub async fn state(
    gw: web::Data<GatewayState>,
    study: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    json_or_error(study_state(&gw, &req, &study).await.map(|s| json!(s)))
}

/// `GET /v1/studies/{study}/api/summary`.
pub async fn summary(
    gw: web::Data<GatewayState>,
    study: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    json_or_error(
        study_state(&gw, &req, &study)
            .await
            .map(|s| json!(s.summary())),
    )
}

/// `GET /v1/studies/{study}/api/events?limit=&event=&q=`.
pub async fn events(
    gw: web::Data<GatewayState>,
    study: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    let answer = async {
        let query: EventsQuery = parse_query(req.query_string())?;
        let events = study_events(&gw, &study).await?;
        let lines = events.iter().map(|e| event_json(e).to_string());
        Ok(json!({ "events": query.select(lines) }))
    };
    json_or_error(answer.await)
}

/// `GET /v1/studies/{study}/api/actions?limit=`.
pub async fn actions(
    gw: web::Data<GatewayState>,
    study: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    let answer = async {
        let query: ActionsQuery = parse_query(req.query_string())?;
        let recorded = study_events(&gw, &study)
            .await?
            .iter()
            .filter_map(action_of)
            .collect();
        Ok(json!({ "actions": query.select(recorded) }))
    };
    json_or_error(answer.await)
}

/// `POST /v1/studies/{study}/api/actions` with `{"action", "reason"}`.
pub async fn post_action(
    gw: web::Data<GatewayState>,
    study: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let answer = async {
        require_json(&req)?;
        let request = ActionRequest::parse(&read_body(payload).await?)?;
        let reply = match request.action {
            Action::Pause | Action::Resume => steer_run(&gw, &req, &study, &request).await?,
            Action::Rollback => rollback(&gw, &req, &study, request.reason).await?,
        };
        Ok(json!(ActionAnswer {
            ok: true,
            action: request.action.as_str().to_string(),
            recorded: reply.events.as_ref().is_some_and(|e| !e.is_empty()),
            stream: reply.stream,
            seq: reply.seq,
        }))
    };
    json_or_error(answer.await)
}

/// `answer` as a 200 JSON body, or its rejection in the reply shape.
pub fn json_or_error(answer: Result<Value, Rejection>) -> HttpResponse {
    match answer {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(rejection) => error_response(&rejection),
    }
}

/// Refuses an action whose body is not declared JSON (what a web page
/// cannot send cross-origin without a preflight).
pub fn require_json(req: &HttpRequest) -> Result<(), Rejection> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match guard::command_media_type(content_type)? {
        Encoding::Json => Ok(()),
        _ => Err(Rejection::new(
            ErrorCode::UnsupportedMediaType,
            "an action needs Content-Type: application/json",
        )),
    }
}

fn stream_of(actor: Actor, study: &str) -> Result<StreamName, Rejection> {
    flotilla_messages::validate_id("study", study)
        .map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))?;
    StreamName::new(actor, study).map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))
}

/// Sends `msg` to `actor` as the caller and reads its reply; a refusal
/// becomes the rejection it carries.
async fn ask(
    gw: &GatewayState,
    req: &HttpRequest,
    msg: Message,
    actor: Actor,
) -> Result<Reply, Rejection> {
    let reply = gw
        .bus
        .request(as_caller(gw, req, msg), gw.request_timeout)
        .await
        .map_err(|e| bus_rejection(e, actor.as_str()))?;
    let reply: Reply = serde_json::from_slice(&reply.payload).map_err(|e| {
        Rejection::new(
            ErrorCode::Unavailable,
            format!("{}: unreadable reply: {e}", actor.as_str()),
        )
    })?;
    match &reply.error {
        Some(error) if !reply.ok => Err(Rejection::new(
            ErrorCode::parse(&error.code).unwrap_or(ErrorCode::Internal),
            error.message.clone(),
        )),
        _ => Ok(reply),
    }
}

/// The study's query view (`NOT_FOUND` when it does not exist).
async fn study_view(gw: &GatewayState, req: &HttpRequest, study: &str) -> Result<Value, Rejection> {
    let stream = stream_of(Actor::Solver, study)?;
    let msg = Message::new(gw.subjects.query(&stream), Bytes::from_static(b"{}"));
    let reply = ask(gw, req, msg, Actor::Solver).await?;
    Ok(reply.result.unwrap_or_default())
}

async fn study_state(
    gw: &GatewayState,
    req: &HttpRequest,
    study: &str,
) -> Result<ArqonState, Rejection> {
    let view = study_view(gw, req, study).await?;
    let created = read_stream(gw, &stream_of(Actor::Solver, study)?, Some(1)).await?;
    ArqonState::from_study_view(&view, created.first().map(|e| e.id.clone()))
}

/// The events of the study and of its run, in the order they were stored.
async fn study_events(gw: &GatewayState, study: &str) -> Result<Vec<Envelope>, Rejection> {
    let solver = stream_of(Actor::Solver, study)?;
    let mut all = read_stream(gw, &solver, None).await?;
    if all.is_empty() {
        return Err(Rejection::new(
            ErrorCode::NotFound,
            format!("{solver} does not exist"),
        ));
    }
    all.extend(read_stream(gw, &stream_of(Actor::StudyRun, study)?, None).await?);
    all.sort_by_key(|e| e.at);
    Ok(all)
}

/// The events of `stream` (at most `first` of them).
async fn read_stream(
    gw: &GatewayState,
    stream: &StreamName,
    first: Option<usize>,
) -> Result<Vec<Envelope>, Rejection> {
    let log_rejection =
        |e: flotilla_bus::LogError| Rejection::new(log_error_code(&e), e.to_string());
    let events = gw
        .log
        .read_stream(&stream.to_string(), 1)
        .await
        .map_err(log_rejection)?;
    events
        .take(first.unwrap_or(usize::MAX))
        .try_collect()
        .await
        .map_err(log_rejection)
}

/// Sends a JSON command to the study's `actor`.
async fn command(
    gw: &GatewayState,
    req: &HttpRequest,
    actor: Actor,
    study: &str,
    body: Value,
) -> Result<Reply, Rejection> {
    let stream = stream_of(actor, study)?;
    let msg = Message::new(gw.subjects.command(&stream), Bytes::from(body.to_string()))
        .with_header("Content-Type", Encoding::Json.content_type());
    ask(gw, req, msg, actor).await
}

/// Pauses or resumes the study's run (`NOT_FOUND` naming the study when it
/// has none).
async fn steer_run(
    gw: &GatewayState,
    req: &HttpRequest,
    study: &str,
    request: &ActionRequest,
) -> Result<Reply, Rejection> {
    let command_type = match request.action {
        Action::Pause => "pause_run",
        _ => "resume_run",
    };
    let body = json!({"type": command_type, "reason": request.reason});
    command(gw, req, Actor::StudyRun, study, body)
        .await
        .map_err(|r| match r.code {
            ErrorCode::NotFound => Rejection::new(
                ErrorCode::NotFound,
                format!(
                    "study {study} has no run to {}: {}",
                    request.action.as_str(),
                    r.message
                ),
            ),
            _ => r,
        })
}

/// Enqueues the best trial's parameters, so the next trial re-evaluates the
/// best known configuration.
async fn rollback(
    gw: &GatewayState,
    req: &HttpRequest,
    study: &str,
    reason: Option<String>,
) -> Result<Reply, Rejection> {
    let view = study_view(gw, req, study).await?;
    let best = &view["best"];
    if best.is_null() {
        return Err(Rejection::new(
            ErrorCode::InvalidState,
            format!("rollback: study {study} has no told trial to roll back to"),
        ));
    }
    let body = json!({"type": "enqueue", "params": best["params"],
        "rollback_to": best["trial_id"], "reason": reason});
    command(gw, req, Actor::Solver, study, body).await
}
