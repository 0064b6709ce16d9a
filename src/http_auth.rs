//! What `up`, `worker` and `agent` share to guard their HTTP servers: from
//! the resolved settings ([`crate::config::HttpAuthSettings`]) to the
//! [`HttpAuth`] their apps carry, refusing a bind beyond loopback without a
//! tokens file (unless `--insecure-no-auth`). The checks themselves are
//! `flotilla_gateway::auth`. The CLI's own HTTP clients present
//! `FLOTILLA_TOKEN` (or the file `FLOTILLA_TOKEN_FILE`) through [`client`]
//! (or [`async_client`]).

use crate::config::HttpAuthSettings;
use actix_web::web;
use anyhow::{Context, Result};
use flotilla_gateway::auth::{
    check_bind, Access, HttpAuth, RateLimiters, RenderRefusal, TokenStore,
};
use std::net::SocketAddr;

/// One server's route table and error shape.
pub struct Server {
    /// Its name in messages (`http`, `worker http`, `agent http`).
    pub what: &'static str,
    /// What each route needs.
    pub access: fn(&actix_web::http::Method, &str) -> Access,
    /// How it renders a refusal.
    pub render: RenderRefusal,
    /// Whether it applies rate limits.
    pub rate_limited: bool,
}

/// The auth of `server` listening on `addr`: the tokens file loaded (a
/// missing or bad file is an error naming it), the bind checked.
pub fn build(
    settings: &HttpAuthSettings,
    server: Server,
    addr: SocketAddr,
) -> Result<web::Data<HttpAuth>> {
    let tokens = match &settings.tokens_file {
        Some(path) => {
            let store = TokenStore::load(path).context("tokens")?;
            if store.is_empty() {
                tracing::warn!(file = %path.display(), "{}: the tokens file has no token: every guarded route answers 401", server.what);
            }
            tracing::info!(tokens = store.len(), %addr, "{}: bearer-token auth on", server.what);
            Some(store)
        }
        None => None,
    };
    check_bind(
        server.what,
        addr,
        tokens.is_some(),
        settings.insecure_no_auth,
    )?;
    let limits = server
        .rate_limited
        .then(|| RateLimiters::new(&settings.rate_limits));
    Ok(web::Data::new(HttpAuth {
        tokens,
        metrics: settings.metrics,
        access: server.access,
        limits,
        render: server.render,
    }))
}

/// The bearer token the CLI's HTTP clients (`send`, `events --http`,
/// `ask`/`tell`/`report`/`study show --http`) present: `FLOTILLA_TOKEN`,
/// else the first line of the file `FLOTILLA_TOKEN_FILE` names (never a
/// flag: a flag's value shows in `ps`).
pub fn client_token() -> Result<Option<String>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(token) = var("FLOTILLA_TOKEN") {
        return Ok(Some(token.trim().to_string()));
    }
    let Some(path) = var("FLOTILLA_TOKEN_FILE") else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("FLOTILLA_TOKEN_FILE {path}: cannot read"))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    anyhow::ensure!(!token.is_empty(), "FLOTILLA_TOKEN_FILE {path}: empty");
    Ok(Some(token))
}

/// A blocking HTTP client that sends [`client_token`] as
/// `Authorization: Bearer` on every request (marked sensitive, so it is
/// never logged), with `timeout` (`None`: none, for streams).
pub fn client(timeout: Option<std::time::Duration>) -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(timeout)
        .default_headers(token_headers()?)
        .build()?)
}

/// The async twin of [`client`], for commands that wait on other things
/// while they talk to the gateway (`run --remote`, `study watch`).
pub fn async_client(timeout: Option<std::time::Duration>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().default_headers(token_headers()?);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    Ok(builder.build()?)
}

/// `Authorization: Bearer` [`client_token`] (marked sensitive), if there is one.
fn token_headers() -> Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = client_token()? {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("FLOTILLA_TOKEN: not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}
