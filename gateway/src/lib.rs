//! The HTTP face of Flotilla (actix-web).
//!
//! The gateway owns no state of its own: a command posted to
//! `POST /v1/cmd/<actor>/<id>` becomes a request on `<prefix>.cmd.<actor>.<id>`
//! and the actor's reply comes back unchanged, with an HTTP status derived
//! from its error code. So HTTP and NATS clients see the same contract, and
//! the gateway works the same with the embedded bus or a NATS server.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | the process is alive |
//! | `GET /readyz` | 503 until every actor has recovered, and `unavailable` while the bus is disconnected; then 200, `degraded` with the `corrupt` streams listed if any |
//! | `GET /metrics` | Prometheus text |
//! | `POST /v1/cmd/{actor}/{id}` | a command (JSON or MessagePack), the reply as over NATS |
//! | `GET /v1/query/{actor}[/{id}]` | state of one aggregate (`?after=&limit=` pages a queue's jobs or a run's trials), or the list of ids |
//! | `GET /v1/events?from=&stream=&follow=` | events as JSON lines, from the log |
//! | `GET /v1/studies/{study}/api/state` | ArqonHPO's dashboard state of a study: `{config, history, run_id}` ([`arqon_api`]) |
//! | `GET /v1/studies/{study}/api/summary` | `{run_id, budget, history_len, best, latest}` |
//! | `GET /v1/studies/{study}/api/events?limit=&event=&q=` | the study's and its run's events, `{events}` |
//! | `GET /v1/studies/{study}/api/actions?limit=` | the dashboard actions in the log, `{actions}` |
//! | `POST /v1/studies/{study}/api/actions` | `{"action": "pause"\|"resume"\|"rollback", "reason"}`: pauses or resumes the study's run, or enqueues its best trial's parameters |
//! | `GET /v1/replay/{actor}/{id}?seq=` | state of one aggregate after its event `seq` ([`replay`]) |
//! | `GET /v1/inference/workers` | the `/metrics` text of each `--inference-worker` ([`inference_workers`]) |
//! | `GET /openapi.json`, `/docs`, `/redoc` | the OpenAPI 3.1 document of these routes and its viewers ([`openapi`], [`api_docs`]) |
//! | `GET /`, `GET /dashboard/{file}` | the live web dashboard, open: it holds no data ([`dashboard`]) |
//!
//! [`routes`] is the one list of these routes (the document's test checks
//! it against the document); another method on a route answers 405
//! `METHOD_NOT_ALLOWED` with `Allow`.
//! Every `/v1/` request must name an allowed `Host` and carry no foreign
//! `Origin`, and a command must be JSON or MessagePack ([`guard`]): a web
//! page cannot drive a local control plane.
//!
//! With a tokens file, every route but the probes, the OpenAPI document and
//! its viewers (and `/metrics` when it is open) needs a bearer token whose role allows it, within its rate
//! limit ([`auth`]; see [`access`] for the table). Every command put on the
//! bus carries the caller's principal in `Flotilla-Principal`
//! (`anonymous` without auth); a client's own header of that name is never
//! passed on.
//!
//! ArqonHPO's dashboard API is in [`arqon_api`] (its shapes in [`arqon`],
//! shared with `flotilla dashboard --state`). The inference worker's
//! CarlaRL-compatible routes are in [`inference`], their OpenAPI document
//! in [`inference_openapi`].

#![warn(missing_docs)]

pub mod api_docs;
pub mod arqon;
pub mod arqon_api;
pub mod auth;
pub mod dashboard;
pub mod guard;
pub mod inference;
pub mod inference_openapi;
pub mod inference_workers;
pub mod openapi;
pub mod replay;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::Server;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use auth::{Access, HttpAuth, Refusal};
use bytes::Bytes;
use flotilla_bus::{Bus, BusError, CorruptStreams, EventLog, Message};
use flotilla_messages::auth::{Permission, PRINCIPAL_HEADER};
use flotilla_messages::{
    validate_id, Actor, Encoding, ErrorCode, Rejection, Reply, StreamName, Subjects,
};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The largest command body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct GatewayState {
    /// The bus commands are forwarded on.
    pub bus: Arc<dyn Bus>,
    /// The event log, for `/v1/events`.
    pub log: Arc<dyn EventLog>,
    /// Subject names.
    pub subjects: Subjects,
    /// Set once every actor has recovered.
    pub ready: Arc<AtomicBool>,
    /// Streams set aside as corrupt during recovery (listed by `/readyz`).
    pub corrupt: CorruptStreams,
    /// Metrics to expose.
    pub registry: prometheus::Registry,
    /// How long to wait for an actor's reply.
    pub request_timeout: Duration,
    /// Allowed `Host` and `Origin` values.
    pub policy: guard::RequestPolicy,
    /// Tokens, roles and rate limits ([`access`] is the route table).
    pub auth: web::Data<HttpAuth>,
    /// Signs what the gateway forwards for the caller it authenticated, on
    /// a shared bus (NATS), where a bare `Flotilla-Principal` is not
    /// believed; `None` on the embedded bus.
    pub signer: Option<Arc<flotilla_messages::auth::CommandSigner>>,
    /// Folds a stream into its aggregate's state, for `/v1/replay`.
    pub replay: Arc<dyn replay::StateAt>,
    /// Base URLs of the inference workers whose `/metrics`
    /// [`inference_workers`] reads.
    pub inference_workers: Vec<String>,
}

/// What each gateway route needs: commands and dashboard actions
/// `command`; queries, a study's dashboard reads, replays and the workers'
/// metrics `query`; the log `events`; the OpenAPI document, its viewers and
/// the dashboard's files nothing; any other path a valid token (it answers
/// 404). The probes and `/metrics` are decided by [`auth`] itself.
pub fn access(method: &actix_web::http::Method, path: &str) -> Access {
    use actix_web::http::Method;
    let studies = path.starts_with("/v1/studies/");
    if api_docs::is_docs_route(method, path) {
        Access::Open
    } else if *method == Method::POST && (path.starts_with("/v1/cmd/") || studies) {
        Access::Needs(Permission::Command)
    } else if *method == Method::GET
        && (path.starts_with("/v1/query/")
            || studies
            || path.starts_with("/v1/replay/")
            || path == inference_workers::PATH)
    {
        Access::Needs(Permission::Query)
    } else if *method == Method::GET && dashboard::is_dashboard_path(path) {
        Access::Open
    } else if *method == Method::GET && path == "/v1/events" {
        Access::Needs(Permission::Events)
    } else {
        Access::Authenticated
    }
}

/// A refusal of [`auth`] in the gateway's reply shape: `{"ok": false,
/// "error": {"code", "message"}}`, plus `missing_permission` on a 403.
pub fn render_refusal(_req: &ServiceRequest, refusal: &Refusal) -> HttpResponse {
    let code = match refusal {
        Refusal::Unauthenticated(_) => ErrorCode::Unauthenticated,
        Refusal::Forbidden { .. } => ErrorCode::Forbidden,
        Refusal::RateLimited { .. } => ErrorCode::RateLimited,
    };
    let rejection = Rejection::new(code, refusal.message());
    let mut body = serde_json::to_value(Reply::rejected(&rejection)).unwrap_or_default();
    if let Some(missing) = refusal.missing_permission() {
        body["missing_permission"] = serde_json::Value::from(missing.as_str());
    }
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    HttpResponse::build(status).json(body)
}

/// Every route of the gateway's API as (path, method, handler): the one
/// list [`configure`] serves and the OpenAPI document must describe (its
/// test compares them; `{actor}` in a command or query route stands for
/// each of [`openapi::ACTORS`]).
pub fn routes() -> Vec<(&'static str, &'static str, actix_web::Route)> {
    vec![
        ("/healthz", "GET", web::get().to(healthz)),
        ("/readyz", "GET", web::get().to(readyz)),
        ("/metrics", "GET", web::get().to(metrics)),
        ("/v1/cmd/{actor}/{id}", "POST", web::post().to(command)),
        ("/v1/query/{actor}", "GET", web::get().to(query_list)),
        ("/v1/query/{actor}/{id}", "GET", web::get().to(query_one)),
        ("/v1/events", "GET", web::get().to(events)),
        (
            "/v1/studies/{study}/api/state",
            "GET",
            web::get().to(arqon_api::state),
        ),
        (
            "/v1/studies/{study}/api/summary",
            "GET",
            web::get().to(arqon_api::summary),
        ),
        (
            "/v1/studies/{study}/api/events",
            "GET",
            web::get().to(arqon_api::events),
        ),
        (
            "/v1/studies/{study}/api/actions",
            "GET",
            web::get().to(arqon_api::actions),
        ),
        (
            "/v1/studies/{study}/api/actions",
            "POST",
            web::post().to(arqon_api::post_action),
        ),
        (
            "/v1/replay/{actor}/{id}",
            "GET",
            web::get().to(replay::replay),
        ),
        (
            inference_workers::PATH,
            "GET",
            web::get().to(inference_workers::workers),
        ),
    ]
}

/// [`routes`] grouped by path, in order of first appearance: one resource
/// serves every method of a path.
type RoutesOfPath = (&'static str, Vec<(&'static str, actix_web::Route)>);

fn by_path(routes: Vec<(&'static str, &'static str, actix_web::Route)>) -> Vec<RoutesOfPath> {
    let mut grouped: Vec<RoutesOfPath> = Vec::new();
    for (path, method, route) in routes {
        match grouped.iter_mut().find(|(p, _)| *p == path) {
            Some((_, methods)) => methods.push((method, route)),
            None => grouped.push((path, vec![(method, route)])),
        }
    }
    grouped
}

/// Adds the gateway's routes, its OpenAPI document and the viewers to an
/// actix-web app.
pub fn configure(state: GatewayState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let auth = state.auth.clone();
        cfg.app_data(auth.clone())
            .app_data(web::Data::new(state.policy.clone()))
            .app_data(web::Data::new(state))
            .app_data(web::QueryConfig::default().error_handler(query_error));
        for (path, methods) in by_path(routes()) {
            cfg.service(resource_of(path, methods));
        }
        openapi::configure_docs(cfg, &auth, endpoint);
        cfg.service(endpoint("/", "GET", web::get().to(dashboard::index)))
            .service(endpoint(
                "/dashboard/{file}",
                "GET",
                web::get().to(dashboard::asset),
            ));
    }
}

/// A route that answers 405 `METHOD_NOT_ALLOWED` to other methods, with
/// the `Allow` header HTTP requires (RFC 9110 §15.5.6).
fn endpoint(path: &str, allow: &'static str, route: actix_web::Route) -> actix_web::Resource {
    resource_of(path, vec![(allow, route)])
}

/// One resource for `path` serving each of `methods`, and 405 with their
/// names in `Allow` to any other method.
pub fn resource_of(
    path: &str,
    methods: Vec<(&'static str, actix_web::Route)>,
) -> actix_web::Resource {
    let allow: Vec<&str> = methods.iter().map(|(m, _)| *m).collect();
    let allow = allow.join(", ");
    let mut resource = web::resource(path);
    for (_, route) in methods {
        resource = resource.route(route);
    }
    resource.default_service(web::to(move |req: HttpRequest| {
        method_not_allowed(req, allow.clone())
    }))
}

async fn method_not_allowed(req: HttpRequest, allow: String) -> HttpResponse {
    let rejection = Rejection::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {} (allowed: {allow})",
            req.method(),
            req.path()
        ),
    );
    let mut response = error_response(&rejection);
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("GET")),
    );
    response
}

/// Any path no route serves: 404 `NOT_FOUND` in the reply shape.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(&Rejection::new(
        ErrorCode::NotFound,
        format!("no route {} {}", req.method(), req.path()),
    ))
}

/// A query string that does not parse (an unknown parameter, a number
/// that is not one) is `INVALID_FIELD`, in the reply shape.
fn query_error(e: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let rejection = Rejection::invalid(format!("query: {e}"));
    actix_web::error::InternalError::from_response(e, error_response(&rejection)).into()
}

/// Binds `addr` and returns the running server (a future to spawn or await).
pub fn start(state: GatewayState, addr: std::net::SocketAddr) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(auth::authenticate))
            .wrap(from_fn(refuse_foreign))
            .configure(configure(state.clone()))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(addr)?
    .run();
    tracing::info!(%addr, "HTTP gateway listening");
    Ok(server)
}

/// Refuses an API request (`/v1/`, and `flotilla dashboard`'s `/api/`)
/// whose `Host` is not allowed (DNS rebinding) or whose `Origin` is foreign
/// (CSRF), under the app's [`guard::RequestPolicy`]. Probes and metrics
/// stay open: they change nothing and are read by whatever address the
/// prober uses.
pub async fn refuse_foreign(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let path = auth::routed_path(&req);
    let api = path.starts_with("/v1/") || path.starts_with("/api/");
    let refusal = match req.app_data::<web::Data<guard::RequestPolicy>>() {
        Some(policy) if api => foreign_request(policy, &req),
        _ => None,
    };
    match refusal {
        Some(rejection) => Ok(req.into_response(error_response(&rejection))),
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

/// Why `req` is refused under `policy`, if it is.
fn foreign_request(policy: &guard::RequestPolicy, req: &ServiceRequest) -> Option<Rejection> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !policy.host_allowed(host) {
        return Some(Rejection::new(
            ErrorCode::ForbiddenHost,
            format!("Host {host:?} is not an allowed host (see --allowed-hosts)"),
        ));
    }
    let origin = req.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("?");
    let scheme = req.connection_info().scheme().to_string();
    (!policy.origin_allowed(origin, &scheme, host)).then(|| {
        Rejection::new(
            ErrorCode::ForbiddenOrigin,
            format!("Origin {origin:?} is not allowed (see --allowed-origins)"),
        )
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready once every actor has recovered. Corrupt aggregates do not make the
/// process unready (the others serve, and a load balancer must keep sending
/// them traffic): they are listed under `corrupt`, with status `degraded`.
/// Whatever the actors' state, a bus that cannot carry messages (NATS
/// down) makes the process unavailable.
async fn readyz(state: web::Data<GatewayState>) -> HttpResponse {
    if let Some(reason) = state.bus.unavailable() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "reason": reason}));
    }
    if state.ready.load(Ordering::Acquire) {
        let corrupt = state.corrupt.list();
        if corrupt.is_empty() {
            return HttpResponse::Ok().json(serde_json::json!({"status": "ready"}));
        }
        HttpResponse::Ok().json(serde_json::json!({"status": "degraded", "corrupt": corrupt}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "recovering"}))
    }
}

async fn metrics(state: web::Data<GatewayState>) -> HttpResponse {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode_utf8(&state.registry.gather(), &mut out) {
        return error_response(&Rejection::new(ErrorCode::Internal, e.to_string()));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

fn parse_actor(actor: &str) -> Result<Actor, Rejection> {
    actor
        .parse()
        .map_err(|e: flotilla_messages::subjects::UnknownActor| {
            Rejection::new(ErrorCode::UnknownActor, e.to_string())
        })
}

pub(crate) fn parse_stream(actor: &str, id: &str) -> Result<StreamName, Rejection> {
    let actor = parse_actor(actor)?;
    validate_id("id", id).map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))?;
    StreamName::new(actor, id).map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))
}

/// An error reply as JSON with the status of its code.
pub fn error_response(rejection: &Rejection) -> HttpResponse {
    let status = StatusCode::from_u16(rejection.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(Reply::rejected(rejection))
}

/// The rejection of a request the bus could not carry to `what`.
pub(crate) fn bus_rejection(e: BusError, what: &str) -> Rejection {
    match e {
        BusError::NoResponders(_) => {
            Rejection::new(ErrorCode::Unavailable, format!("no {what} is running"))
        }
        BusError::Timeout { .. } => {
            Rejection::new(ErrorCode::Timeout, format!("{what} did not answer: {e}"))
        }
        other => Rejection::new(ErrorCode::Unavailable, other.to_string()),
    }
}

/// A request body up to [`MAX_BODY_BYTES`]; a larger one is `TOO_LARGE`
/// and one that cannot be read `MALFORMED_BODY`, in the reply shape (not
/// actix's plain text).
pub async fn read_body(payload: web::Payload) -> Result<Bytes, Rejection> {
    guard::read_limited(payload, MAX_BODY_BYTES)
        .await
        .map(|body| body.freeze())
        .map_err(|e| match e {
            guard::BodyError::TooLarge(_) => Rejection::new(
                ErrorCode::TooLarge,
                format!("the body's {e} (the gateway's limit)"),
            ),
            e => Rejection::new(ErrorCode::MalformedBody, e.to_string()),
        })
}

async fn command(
    state: web::Data<GatewayState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (actor, id) = path.into_inner();
    let stream = match parse_stream(&actor, &id) {
        Ok(s) => s,
        Err(r) => return error_response(&r),
    };
    let body = match read_body(payload).await {
        Ok(body) => body,
        Err(r) => return error_response(&r),
    };
    // Unlike NATS, HTTP never sniffs: a browser may send text/plain, form
    // and multipart bodies (and bodies without a type) cross-origin without
    // a preflight.
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let encoding = match guard::command_media_type(content_type) {
        Ok(e) => e,
        Err(rejection) => return error_response(&rejection),
    };
    let mut msg = Message::new(state.subjects.command(&stream), body)
        .with_header("Content-Type", encoding.content_type());
    if let Some(key) = req
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
    {
        msg = msg.with_header("Nats-Msg-Id", key);
    }
    forward(&state, &req, msg, encoding, stream.actor.as_str()).await
}

/// Puts `msg` on the bus as the request's principal and passes the reply
/// through. The message is built here from scratch, so no header of the
/// client's reaches the bus but the ones copied on purpose.
async fn forward(
    state: &GatewayState,
    req: &HttpRequest,
    msg: Message,
    encoding: Encoding,
    what: &str,
) -> HttpResponse {
    match state
        .bus
        .request(as_caller(state, req, msg), state.request_timeout)
        .await
    {
        Ok(reply) => reply_response(reply.payload, encoding),
        Err(e) => error_response(&bus_rejection(e, what)),
    }
}

/// `msg` sent in the name of the request's principal.
pub(crate) fn as_caller(state: &GatewayState, req: &HttpRequest, msg: Message) -> Message {
    let principal = auth::principal_of(req).name;
    match &state.signer {
        // On a shared bus only a signature makes the host believe the name.
        Some(signer) => msg.signed_by(signer, Some(&principal)),
        None => msg.with_header(PRINCIPAL_HEADER, principal),
    }
}

/// Passes the actor's reply through, with the status its error code maps to.
fn reply_response(body: Bytes, encoding: Encoding) -> HttpResponse {
    let status = match encoding.decode::<Reply>(&body) {
        Ok(Reply { ok: true, .. }) => StatusCode::OK,
        Ok(Reply {
            error: Some(err), ..
        }) => status_of(&err.code),
        _ => StatusCode::BAD_GATEWAY,
    };
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        ))
        .body(body)
}

fn status_of(code: &str) -> StatusCode {
    ErrorCode::parse(code)
        .and_then(|c| StatusCode::from_u16(c.http_status()).ok())
        .unwrap_or(StatusCode::BAD_REQUEST)
}

async fn query_one(
    state: web::Data<GatewayState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> HttpResponse {
    let (actor, id) = path.into_inner();
    let query = match query_page(req.query_string()) {
        Ok(body) => body,
        Err(r) => return error_response(&r),
    };
    match parse_stream(&actor, &id) {
        Ok(stream) => {
            let msg = Message::new(state.subjects.query(&stream), query);
            forward(&state, &req, msg, Encoding::Json, stream.actor.as_str()).await
        }
        Err(r) => error_response(&r),
    }
}

/// The query body for `?after=ID&limit=N` (see [`flotilla_messages::Page`]);
/// an unknown parameter or a bad limit is `INVALID_FIELD`, naming it.
fn query_page(query: &str) -> Result<Bytes, Rejection> {
    let page = web::Query::<flotilla_messages::Page>::from_query(query)
        .map_err(|e| Rejection::invalid(format!("query: {e}")))?
        .into_inner();
    page.validate()?;
    let body = serde_json::to_vec(&page).map_err(|e| Rejection::invalid(e.to_string()))?;
    Ok(Bytes::from(body))
}

async fn query_list(
    state: web::Data<GatewayState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    match parse_actor(&path) {
        Ok(actor) => {
            let msg = Message::new(state.subjects.query_list(actor), Bytes::from_static(b"{}"));
            forward(&state, &req, msg, Encoding::Json, actor.as_str()).await
        }
        Err(r) => error_response(&r),
    }
}

/// The wire code of a log failure: damage is `CORRUPT`, anything else
/// (a timeout, a lost connection) `UNAVAILABLE`.
pub(crate) fn log_error_code(e: &flotilla_bus::LogError) -> ErrorCode {
    if e.is_damage() {
        ErrorCode::Corrupt
    } else {
        ErrorCode::Unavailable
    }
}

/// Query parameters of `/v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// First global position (default 1).
    #[serde(default)]
    pub from: Option<u64>,
    /// Only this stream (`<actor>/<id>`).
    #[serde(default)]
    #[param(
        pattern = "^(solver|scheduler|provisioner|health|inference|study_run)/[A-Za-z0-9_-]{1,64}$"
    )]
    pub stream: Option<String>,
    /// Keep the response open for new events.
    #[serde(default)]
    pub follow: Option<bool>,
}

async fn events(state: web::Data<GatewayState>, q: web::Query<EventsQuery>) -> HttpResponse {
    let q = q.into_inner();
    if let Some(s) = &q.stream {
        if let Err(e) = s.parse::<StreamName>() {
            return error_response(&Rejection::new(
                ErrorCode::InvalidField,
                format!("stream: {e}"),
            ));
        }
    }
    let all = match state
        .log
        .read_all(q.from.unwrap_or(1), q.follow.unwrap_or(false))
        .await
    {
        Ok(s) => s,
        Err(e) => return error_response(&Rejection::new(ErrorCode::Unavailable, e.to_string())),
    };
    let only = q.stream;
    let lines = all
        .filter(move |item| {
            let keep = match (item, &only) {
                (Ok(p), Some(s)) => &p.envelope.stream == s,
                _ => true,
            };
            futures::future::ready(keep)
        })
        .map(|item| {
            let line = match item {
                Ok(p) => serde_json::to_vec(&p.envelope),
                Err(e) => serde_json::to_vec(
                    &serde_json::json!({"error": {"code": log_error_code(&e).as_str(), "message": e.to_string()}}),
                ),
            };
            let mut line = line.unwrap_or_default();
            line.push(b'\n');
            Ok::<_, actix_web::Error>(Bytes::from(line))
        });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(lines)
}

/// A gateway over an embedded bus and an empty log in a temporary
/// directory, for the handlers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use flotilla_bus::embedded::{EmbeddedBus, SledLog};

    /// A replay that finds no stream.
    struct NoStreams;

    impl replay::StateAt for NoStreams {
        fn state_at<'a>(
            &'a self,
            stream: &'a StreamName,
            _seq: Option<u64>,
        ) -> futures::future::BoxFuture<'a, Result<serde_json::Value, replay::ReplayError>>
        {
            Box::pin(async move { Err(replay::ReplayError::NoEvents(stream.to_string())) })
        }
    }

    /// The state; its log lives as long as the process (a leaked tempdir).
    pub fn state() -> GatewayState {
        let dir = tempfile::tempdir().expect("a tempdir").keep();
        GatewayState {
            bus: Arc::new(EmbeddedBus::new()),
            log: Arc::new(SledLog::open(&dir).expect("a log")),
            subjects: Subjects::default(),
            ready: Arc::new(AtomicBool::new(true)),
            corrupt: CorruptStreams::default(),
            registry: prometheus::Registry::new(),
            request_timeout: Duration::from_secs(1),
            policy: guard::RequestPolicy::for_bind(([127, 0, 0, 1], 8080).into(), vec![], vec![]),
            auth: web::Data::new(HttpAuth {
                tokens: None,
                metrics: auth::MetricsAuth::Open,
                access,
                limits: None,
                render: render_refusal,
            }),
            signer: None,
            replay: Arc::new(NoStreams),
            inference_workers: vec![],
        }
    }

    /// A loopback port nothing listens on (bound, then closed).
    pub fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }
}
