//! The inference worker's HTTP face, compatible with CarlaRL
//! Policy-as-a-Service: same routes, bodies, error codes and headers.
//!
//! | route | what |
//! |---|---|
//! | `POST /predict` | actions for 1–1000 observations (JSON or MessagePack) |
//! | `GET /healthz` | always 200: `ok`, or `degraded` when no model serves |
//! | `GET /readyz` | 503 until a model is loaded and warm |
//! | `GET /metadata` | model name, version, device, input shape, action space; 503 without a model |
//! | `POST /warmup` | runs the serving model once more; 503 without a model |
//! | `GET /versions` | every version folder, which one serves, how it was chosen, and the deployment's record (load outcomes, history) |
//! | `POST /versions/{version}/load` | load, verify and warm a version (an event of the deployment) |
//! | `POST /versions/{version}/activate` | load if needed, then route traffic to it |
//! | `POST /versions/rollback` | route traffic back to the version before |
//! | `GET /metrics` | Prometheus text: CarlaRL's labelled families, `http_request_duration_seconds`, `process_*` ([`flotilla_inference::InferenceMetrics`]) |
//! | `GET /openapi.json`, `/docs`, `/redoc` | the OpenAPI 3.1 document and its viewers ([`crate::inference_openapi`]) |
//!
//! Every response carries `X-Request-ID` (the caller's, or a new one; equal
//! to `details.request_id` in error bodies) and `X-Process-Time` (seconds).
//! `ALLOWED_HOSTS` and `CORS_ORIGINS` behave as Starlette's middlewares do in
//! CarlaRL. The routes that change what serves (`/warmup`, `/versions/...`)
//! are guarded further, as the gateway's commands are ([`crate::guard`]):
//! a JSON or MessagePack body or none, no `Origin` but the worker's own or
//! one listed in `CORS_ORIGINS` (`*` opens `/predict` only), and with
//! `ALLOWED_HOSTS=*` a loopback name or IP literal as `Host`. The work itself is `flotilla_inference`; this module only
//! translates HTTP.
//!
//! With a tokens file ([`crate::auth`]), the probes stay open, `/metrics`
//! is open or needs a token, and every other route a token whose role
//! allows it ([`access`]): `infer` to predict, read metadata, warm up and
//! list versions; `serve_admin` to load, activate or roll back. Refusals
//! are CarlaRL-shaped errors (`UNAUTHENTICATED`, `FORBIDDEN` with
//! `details.missing_permission`, `RATE_LIMITED`).

use crate::auth::{self, Access, HttpAuth, Refusal};
use crate::guard;
use crate::inference_openapi;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use flotilla_inference::{InferenceEngine, VersionControl};
use flotilla_messages::inference::{unix_timestamp, FieldError, ServingError, ServingErrorCode};
use flotilla_messages::{CodecError, Encoding};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Settings of the HTTP server (CarlaRL's environment variables).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `CORS_ORIGINS`: allowed origins, `*` for any (on `/predict` and reads;
    /// the version routes need a listed origin).
    pub cors_origins: Vec<String>,
    /// `ALLOWED_HOSTS`: allowed `Host` names, `*` for any, `*.example.com` for subdomains.
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// `WORKERS`: HTTP worker threads.
    pub workers: usize,
    /// Reported by `/healthz`.
    pub git: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            cors_origins: vec!["*".into()],
            allowed_hosts: vec!["*".into()],
            max_body_bytes: 8 * 1024 * 1024,
            workers: 1,
            git: "unknown".into(),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct InferenceHttp {
    /// The serving engine.
    pub engine: Arc<InferenceEngine>,
    /// Version operations (load, activate, roll back).
    pub control: VersionControl,
    /// Metrics to expose.
    pub registry: prometheus::Registry,
    /// Settings.
    pub settings: Arc<HttpSettings>,
    /// Tokens, roles and rate limits.
    pub auth: web::Data<HttpAuth>,
}

/// What each worker route needs (the probes and `/metrics` are decided by
/// [`crate::auth`]): changing what serves needs `serve_admin`, every other
/// route `infer`; an unknown path a valid token (it answers 404).
pub fn access(method: &Method, path: &str) -> Access {
    use flotilla_messages::auth::Permission;
    match path {
        "/predict" | "/metadata" | "/warmup" | "/versions" => Access::Needs(Permission::Infer),
        // The API's description and its viewers, open like `/healthz`.
        p if crate::api_docs::is_docs_route(method, p) => Access::Open,
        p if p.starts_with("/versions/") && *method == Method::POST => {
            Access::Needs(Permission::ServeAdmin)
        }
        p if p.starts_with("/versions/") => Access::Needs(Permission::Infer),
        _ => Access::Authenticated,
    }
}

/// A refusal of [`crate::auth`] as CarlaRL's error body, with the request's id.
pub fn render_refusal(req: &ServiceRequest, refusal: &Refusal) -> HttpResponse {
    let code = match refusal {
        Refusal::Unauthenticated(_) => ServingErrorCode::Unauthenticated,
        Refusal::Forbidden { .. } => ServingErrorCode::Forbidden,
        Refusal::RateLimited { .. } => ServingErrorCode::RateLimited,
    };
    let mut e = ServingError::new(code, refusal.message());
    if let Some(missing) = refusal.missing_permission() {
        e = e.with_detail("missing_permission", missing.as_str());
    }
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    error_with_id(&id, &e)
}

/// The request id of the request being served.
#[derive(Debug, Clone)]
struct RequestId(String);

/// Adds the inference routes to an actix-web app.
pub fn configure(state: InferenceHttp) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state.auth.clone())
            .app_data(web::Data::new(state))
            .service(endpoint("/predict", "POST", web::post().to(predict)))
            .service(endpoint("/healthz", "GET", web::get().to(healthz)))
            .service(endpoint("/readyz", "GET", web::get().to(readyz)))
            .service(endpoint("/metadata", "GET", web::get().to(metadata)))
            .service(endpoint("/warmup", "POST", web::post().to(warmup)))
            .service(endpoint("/versions", "GET", web::get().to(versions)))
            .service(endpoint(
                "/versions/rollback",
                "POST",
                web::post().to(roll_back),
            ))
            .service(endpoint(
                "/versions/{version}/load",
                "POST",
                web::post().to(load),
            ))
            .service(endpoint(
                "/versions/{version}/activate",
                "POST",
                web::post().to(activate),
            ))
            .service(endpoint("/metrics", "GET", web::get().to(metrics)))
            .configure(|c| inference_openapi::configure_docs(c, endpoint));
    }
}

/// A route that answers 405 `METHOD_NOT_ALLOWED` to other methods, with
/// the `Allow` header HTTP requires (RFC 9110 §15.5.6).
fn endpoint(path: &str, allow: &'static str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move |state, req| {
            method_not_allowed(state, req, allow)
        }))
}

/// Binds `addr` and returns the running server.
pub fn start(state: InferenceHttp, addr: std::net::SocketAddr) -> std::io::Result<Server> {
    let workers = state.settings.workers.max(1);
    let server = HttpServer::new(move || {
        let s = state.clone();
        App::new()
            .wrap(from_fn(auth::authenticate))
            .wrap(from_fn(envelope))
            .configure(configure(s))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .backlog(4096)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(addr)?
    .run();
    tracing::info!(%addr, workers, "inference HTTP listening");
    Ok(server)
}

/// Request id, host check, CORS, `X-Process-Time` and the HTTP metrics
/// around every request.
async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req
        .app_data::<web::Data<InferenceHttp>>()
        .cloned()
        .expect("inference state");
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let settings = &state.settings;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| listed(&settings.cors_origins, o))
        .map(str::to_string);
    let early = if !guard::host_listed(&settings.allowed_hosts, req.connection_info().host()) {
        let e = ServingError::new(ServingErrorCode::InvalidHost, "Invalid host header");
        Some(error_with_id(&request_id, &e))
    } else if let Some(e) = control_refusal(settings, &req) {
        Some(error_with_id(&request_id, &e))
    } else if req.method() == Method::OPTIONS
        && origin.is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        Some(preflight(&req))
    } else {
        None
    };
    let method = req.method().to_string();
    let _active = state.engine.metrics().track_active();
    let mut res = match early {
        Some(response) => req.into_response(response),
        None => next.call(req).await?.map_into_boxed_body(),
    };
    let elapsed = started.elapsed().as_secs_f64();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{elapsed:.6}")) {
        headers.insert(HeaderName::from_static("x-process-time"), v);
    }
    if let Some(origin) = origin {
        // As CarlaRL (Starlette's CORS with credentials allowed): the
        // allowed origin is echoed, never `*`, and may send credentials;
        // the answer depends on the origin, so caches must key on it.
        if let Ok(v) = HeaderValue::from_str(&origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("X-Request-ID, X-Process-Time"),
        );
    }
    let endpoint = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let m = state.engine.metrics();
    m.record_http(&method, &endpoint, res.status().as_u16(), elapsed);
    if let Some(code) = res.response().extensions().get::<ServingErrorCode>() {
        m.record_error(code.as_str(), &endpoint);
    }
    Ok(res)
}

/// Whether `value` is in a comma list where `*` allows anything.
fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|o| o == "*" || o == value)
}

/// Why a request to a route that changes what serves is refused, if it is:
/// what a web page could send cross-origin (or through a rebound DNS name)
/// without a preflight.
fn control_refusal(settings: &HttpSettings, req: &ServiceRequest) -> Option<ServingError> {
    let path = auth::routed_path(req);
    if req.method() != Method::POST || !(path == "/warmup" || path.starts_with("/versions/")) {
        return None;
    }
    let header_str = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header_str(header::HOST).unwrap_or_default();
    if settings.allowed_hosts.iter().any(|h| h == "*") && !guard::rebinding_safe(host) {
        let e = format!("Host {host:?} may not change versions: list it in ALLOWED_HOSTS");
        return Some(ServingError::new(ServingErrorCode::InvalidHost, e));
    }
    let has_body = header_str(header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    match header_str(header::CONTENT_TYPE).filter(|ct| !ct.trim().is_empty()) {
        Some(ct) if guard::command_media_type(Some(ct)).is_err() => {
            let e = "send no body, or Content-Type: application/json";
            return Some(ServingError::new(ServingErrorCode::UnsupportedMediaType, e));
        }
        None if has_body => return declared_encoding(None).err(),
        _ => {}
    }
    let origin = header_str(header::ORIGIN)?;
    let listed = settings.cors_origins.iter().filter(|o| *o != "*").cloned();
    let policy = guard::RequestPolicy {
        allowed_hosts: Vec::new(),
        allowed_origins: listed.collect(),
    };
    let scheme = req.connection_info().scheme().to_string();
    (!policy.origin_allowed(origin, &scheme, host)).then(|| {
        let e = format!("Origin {origin:?} may not change versions: list it in CORS_ORIGINS");
        ServingError::new(ServingErrorCode::ForbiddenOrigin, e)
    })
}

fn preflight(req: &ServiceRequest) -> HttpResponse {
    let asked = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("Content-Type, X-Request-ID"));
    HttpResponse::Ok()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, asked))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish()
}

fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// CarlaRL's error body with the request's id and the code's status; the
/// code rides along in the response's extensions for [`envelope`] to count.
fn error_with_id(request_id: &str, e: &ServingError) -> HttpResponse {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status).json(e.body(request_id, unix_timestamp()));
    response.extensions_mut().insert(e.code);
    response
}

fn error(_state: &InferenceHttp, req: &HttpRequest, e: &ServingError) -> HttpResponse {
    error_with_id(&request_id(req), e)
}

async fn not_found(state: web::Data<InferenceHttp>, req: HttpRequest) -> HttpResponse {
    let e = ServingError::new(
        ServingErrorCode::NotFound,
        format!("no route {} {}", req.method(), req.path()),
    );
    error(&state, &req, &e)
}

async fn method_not_allowed(
    state: web::Data<InferenceHttp>,
    req: HttpRequest,
    allow: &'static str,
) -> HttpResponse {
    let e = ServingError::new(
        ServingErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {} (allowed: {allow})",
            req.method(),
            req.path()
        ),
    );
    let mut response = error(&state, &req, &e);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The encoding a request body declares, or CarlaRL's 422 naming the
/// `body`: HTTP never sniffs, so a body without a `Content-Type` is refused
/// as FastAPI refuses it (it reads such a body as bytes, not an object).
fn declared_encoding(content_type: Option<&str>) -> Result<Encoding, ServingError> {
    Encoding::declared(content_type).map_err(|e| {
        let kind = match e {
            CodecError::MissingContentType => "model_attributes_type",
            _ => "content_type",
        };
        ServingError::validation(vec![FieldError {
            field: "body".into(),
            message: format!(
                "Input should be a valid dictionary or object to extract fields from: {e}"
            ),
            kind: kind.into(),
        }])
    })
}

/// Reads the body up to the limit; a larger one is refused with 413.
async fn read_body(payload: web::Payload, limit: usize) -> Result<web::BytesMut, ServingError> {
    guard::read_limited(payload, limit)
        .await
        .map_err(|e| match e {
            guard::BodyError::TooLarge(_) => {
                ServingError::new(ServingErrorCode::PayloadTooLarge, format!("request {e}"))
                    .with_detail("max_body_bytes", limit)
            }
            guard::BodyError::Unreadable(_) => {
                ServingError::new(ServingErrorCode::ValidationError, e.to_string())
            }
        })
}

async fn predict(
    state: web::Data<InferenceHttp>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let limit = state.settings.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = match declared {
        Some(n) if n > limit => Err(ServingError::new(
            ServingErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        )
        .with_detail("max_body_bytes", limit)),
        _ => read_body(payload, limit).await,
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let outcome = match body.and_then(|body| Ok((declared_encoding(content_type)?, body))) {
        Ok((encoding, body)) => state
            .engine
            .predict_body(encoding, &body)
            .await
            .map(|r| (encoding, r)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((Encoding::Json, response)) => HttpResponse::Ok().json(response),
        Ok((encoding, response)) => match encoding.encode(&response) {
            Ok(bytes) => HttpResponse::Ok()
                .content_type(encoding.content_type())
                .body(bytes),
            Err(e) => error(
                &state,
                &req,
                &ServingError::new(ServingErrorCode::InternalError, e.to_string()),
            ),
        },
        Err(e) => error(&state, &req, &e),
    }
}

async fn healthz(state: web::Data<InferenceHttp>) -> HttpResponse {
    let active = state.engine.active();
    HttpResponse::Ok().json(json!({
        "status": if active.is_some() { "ok" } else { "degraded" },
        // A string, as CarlaRL's schema has it, also when nothing serves.
        "version": active.as_ref().map_or_else(|| "unknown".to_string(), |p| p.version().to_string()),
        "git": state.settings.git,
        "device": state.engine.device_name(),
        "timestamp": unix_timestamp(),
    }))
}

async fn readyz(state: web::Data<InferenceHttp>, req: HttpRequest) -> HttpResponse {
    if state.engine.ready() {
        let version = state.engine.active().map(|p| p.version().to_string());
        return HttpResponse::Ok().json(json!({ "status": "ready", "version": version }));
    }
    let e = ServingError::new(
        ServingErrorCode::ServiceUnavailable,
        "not ready: no model is loaded and warmed up",
    )
    .with_detail("model_loaded", state.engine.active().is_some());
    error(&state, &req, &e)
}

async fn metadata(state: web::Data<InferenceHttp>, req: HttpRequest) -> HttpResponse {
    let Some(policy) = state.engine.active() else {
        return error(&state, &req, &ServingError::no_model());
    };
    HttpResponse::Ok().json(json!({
        "modelName": policy.card().model_name,
        "version": policy.version(),
        "device": policy.device_name(),
        "inputShape": [policy.input_size()],
        "actionSpace": {"throttle": [0.0, 1.0], "brake": [0.0, 1.0], "steer": [-1.0, 1.0]},
    }))
}

async fn warmup(state: web::Data<InferenceHttp>, req: HttpRequest) -> HttpResponse {
    let engine = state.engine.clone();
    let outcome = actix_web::rt::task::spawn_blocking(move || engine.warm_up()).await;
    match outcome {
        Ok(Ok(ms)) => HttpResponse::Ok().json(json!({
            "status": "warmed",
            "timingMs": ms,
            "device": state.engine.device_name(),
        })),
        Ok(Err(e)) => {
            let e = ServingError {
                code: ServingErrorCode::ServiceUnavailable,
                ..e
            };
            error(&state, &req, &e)
        }
        Err(e) => error(
            &state,
            &req,
            &ServingError::new(ServingErrorCode::ServiceUnavailable, e.to_string()),
        ),
    }
}

async fn versions(state: web::Data<InferenceHttp>) -> HttpResponse {
    let mut view = state.engine.versions_view();
    let (deployment, seq) = state.control.state().await;
    view["deployment"] = json!({
        "id": state.control.id(),
        "seq": seq,
        "active": deployment.active,
        "history": deployment.history,
        "versions": deployment.versions,
    });
    HttpResponse::Ok().json(view)
}

fn answered(
    state: &InferenceHttp,
    req: &HttpRequest,
    outcome: Result<Value, ServingError>,
) -> HttpResponse {
    match outcome {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error(state, req, &e),
    }
}

async fn load(
    state: web::Data<InferenceHttp>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let version = path.into_inner();
    let outcome = state
        .control
        .load(&version, &auth::principal_of(&req).name)
        .await
        .map(|loaded| json!({ "version": version, "status": "loaded", "loaded": loaded }));
    answered(&state, &req, outcome)
}

async fn activate(
    state: web::Data<InferenceHttp>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let principal = auth::principal_of(&req).name;
    let outcome = state.control.activate(&path.into_inner(), &principal).await;
    answered(&state, &req, outcome)
}

async fn roll_back(state: web::Data<InferenceHttp>, req: HttpRequest) -> HttpResponse {
    let outcome = state
        .control
        .roll_back(&auth::principal_of(&req).name)
        .await;
    answered(&state, &req, outcome)
}

async fn metrics(state: web::Data<InferenceHttp>, req: HttpRequest) -> HttpResponse {
    let m = state.engine.metrics();
    m.refresh();
    m.set_queue_depth(state.engine.queue_depth());
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode_utf8(&state.registry.gather(), &mut out) {
        return error(
            &state,
            &req,
            &ServingError::new(ServingErrorCode::InternalError, e.to_string()),
        );
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_allow_stars_and_exact_values() {
        let list = vec!["https://a.example".to_string()];
        assert!(listed(&list, "https://a.example"));
        assert!(!listed(&list, "https://b.example"));
        assert!(listed(&["*".to_string()], "anything"));
    }
}
