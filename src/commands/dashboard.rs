//! `flotilla dashboard --state FILE`: ArqonHPO's dashboard API, as
//! `arqonhpo dashboard` serves it, for an ArqonHPO state file or one that
//! `flotilla run --state` writes (shapes in [`flotilla_gateway::arqon`],
//! shared with the gateway's `/v1/studies/<id>/api/`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/state` | the state file, `{config, history, run_id}`, read again on every request |
//! | `GET /api/summary` | `{run_id, budget, history_len, best, latest}` |
//! | `GET /api/events?limit=&event=&q=` | the newest matching lines of `--events` (none without it) |
//! | `GET /api/actions?limit=` | the newest lines of the actions file |
//! | `POST /api/actions` | `{"action": "pause"\|"resume"\|"rollback", "reason"}` appended to the actions file with `timestamp_us` and the caller's principal; `{"ok": true}` |
//!
//! Nothing here steers a run: like ArqonHPO's, the actions file is for
//! whatever drives the study to read. A state file that cannot be read or
//! parsed stops the start (exit 2, naming it); at request time it is 503
//! `UNAVAILABLE`. A bad parameter or body is 400 `INVALID_FIELD`. With a
//! tokens file reads need `query` (viewer) and actions `command`
//! (operator); beyond loopback a tokens file is required. Every `/api/`
//! request goes through the gateway's Host/Origin guard and an action must
//! be JSON, so a web page cannot post one.

use crate::cli::DashboardArgs;
use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{anyhow, Context, Result};
use flotilla_gateway::arqon::{parse_query, ActionRequest, ActionsQuery, ArqonState, EventsQuery};
use flotilla_gateway::arqon_api::{json_or_error, require_json};
use flotilla_gateway::auth::{self, Access, HttpAuth};
use flotilla_gateway::guard::RequestPolicy;
use flotilla_gateway::{
    error_response, not_found, read_body, refuse_foreign, render_refusal, resource_of,
};
use flotilla_messages::auth::Permission;
use flotilla_messages::{ErrorCode, Rejection};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The files the dashboard serves.
#[derive(Debug, Clone)]
struct Files {
    state: PathBuf,
    events: Option<PathBuf>,
    actions: PathBuf,
}

/// Runs `flotilla dashboard`.
pub fn run(args: DashboardArgs) -> Result<ExitCode> {
    read_state(&args.state).map_err(|r| anyhow!(r.message))?;
    if let Some(events) = &args.events {
        std::fs::metadata(events).with_context(|| format!("events {}", events.display()))?;
    }
    let file = crate::config::FileConfig::load(args.config.as_deref())?;
    let settings = crate::config::resolve_http_auth(&args.auth, &file)?;
    let server = crate::http_auth::Server {
        what: "dashboard http",
        access,
        render: render_refusal,
        rate_limited: true,
    };
    let auth = crate::http_auth::build(&settings, server, args.addr)?;
    let files = Files {
        actions: args
            .actions
            .clone()
            .unwrap_or_else(|| actions_beside(&args.state)),
        state: args.state.clone(),
        events: args.events.clone(),
    };
    let policy = RequestPolicy::for_bind(
        args.addr,
        args.allowed_hosts.clone(),
        args.allowed_origins.clone(),
    );
    crate::commands::run_system(serve(files, policy, auth, args.addr))?;
    Ok(ExitCode::SUCCESS)
}

/// `STATE.actions.jsonl`, beside the state file.
fn actions_beside(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".actions.jsonl");
    PathBuf::from(name)
}

/// What each route needs: reads `query`, actions `command`.
fn access(method: &Method, path: &str) -> Access {
    match (method, path) {
        (&Method::POST, "/api/actions") => Access::Needs(Permission::Command),
        (&Method::GET, p) if p.starts_with("/api/") => Access::Needs(Permission::Query),
        _ => Access::Authenticated,
    }
}

async fn serve(
    files: Files,
    policy: RequestPolicy,
    auth: web::Data<HttpAuth>,
    addr: std::net::SocketAddr,
) -> Result<()> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(auth::authenticate))
            .wrap(from_fn(refuse_foreign))
            .app_data(auth.clone())
            .app_data(web::Data::new(policy.clone()))
            .app_data(web::Data::new(files.clone()))
            .service(resource_of(
                "/api/state",
                vec![("GET", web::get().to(state))],
            ))
            .service(resource_of(
                "/api/summary",
                vec![("GET", web::get().to(summary))],
            ))
            .service(resource_of(
                "/api/events",
                vec![("GET", web::get().to(events))],
            ))
            .service(resource_of(
                "/api/actions",
                vec![
                    ("GET", web::get().to(actions)),
                    ("POST", web::post().to(post_action)),
                ],
            ))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(addr)
    .with_context(|| format!("addr {addr}: cannot listen"))?
    .run();
    tracing::info!(%addr, "dashboard listening");
    let handle = server.handle();
    tokio::select! {
        r = server => r?,
        r = super::wait_for_shutdown() => { r?; handle.stop(true).await; }
    }
    Ok(())
}

/// Runs file work off the server's only worker thread (a large events
/// file must not stall the other requests).
async fn off_thread(
    work: impl FnOnce() -> Result<Value, Rejection> + Send + 'static,
) -> HttpResponse {
    let answer = web::block(work)
        .await
        .unwrap_or_else(|e| Err(Rejection::new(ErrorCode::Internal, e.to_string())));
    json_or_error(answer)
}

/// A file the dashboard cannot read (`UNAVAILABLE`, naming it).
fn unreadable(what: &str, path: &Path, e: impl std::fmt::Display) -> Rejection {
    Rejection::new(
        ErrorCode::Unavailable,
        format!("{what} {}: {e}", path.display()),
    )
}

fn read_state(path: &Path) -> Result<ArqonState, Rejection> {
    let text = std::fs::read_to_string(path).map_err(|e| unreadable("state", path, e))?;
    serde_json::from_str(&text).map_err(|e| unreadable("state", path, e))
}

/// The text of a JSON-lines file; a missing one is empty.
fn read_lines(what: &str, path: &Path) -> Result<String, Rejection> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other.map_err(|e| unreadable(what, path, e)),
    }
}

async fn state(files: web::Data<Files>) -> HttpResponse {
    off_thread(move || read_state(&files.state).map(|s| json!(s))).await
}

async fn summary(files: web::Data<Files>) -> HttpResponse {
    off_thread(move || read_state(&files.state).map(|s| json!(s.summary()))).await
}

async fn events(files: web::Data<Files>, req: HttpRequest) -> HttpResponse {
    let query = match parse_query::<EventsQuery>(req.query_string()) {
        Ok(query) => query,
        Err(r) => return error_response(&r),
    };
    off_thread(move || {
        let text = match &files.events {
            Some(path) => read_lines("events", path)?,
            None => String::new(),
        };
        Ok(json!({ "events": query.select(text.lines()) }))
    })
    .await
}

async fn actions(files: web::Data<Files>, req: HttpRequest) -> HttpResponse {
    let query = match parse_query::<ActionsQuery>(req.query_string()) {
        Ok(query) => query,
        Err(r) => return error_response(&r),
    };
    off_thread(move || {
        let text = read_lines("actions", &files.actions)?;
        let recorded = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        Ok(json!({ "actions": query.select(recorded) }))
    })
    .await
}

async fn post_action(
    files: web::Data<Files>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let request = match require_json(&req) {
        Ok(()) => read_body(payload)
            .await
            .and_then(|body| ActionRequest::parse(&body)),
        Err(r) => Err(r),
    };
    let record = match request {
        Ok(request) => request.record(&auth::principal_of(&req).name),
        Err(r) => return error_response(&r),
    };
    off_thread(move || {
        append_line(&files.actions, &record)?;
        Ok(json!({ "ok": true }))
    })
    .await
}

/// Appends `record` as one line (a single write, so concurrent appends do
/// not interleave).
fn append_line(path: &Path, record: &Value) -> Result<(), Rejection> {
    let mut line = record.to_string();
    line.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| unreadable("actions", path, e))
}
