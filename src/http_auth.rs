//! What `up`, `worker` and `agent` share to guard their HTTP servers: from
//! the resolved settings ([`crate::config::HttpAuthSettings`]) to the
//! [`HttpAuth`] their apps carry, refusing a bind beyond loopback without a
//! tokens file (unless `--insecure-no-auth`). The checks themselves are
//! `flotilla_gateway::auth`.

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
