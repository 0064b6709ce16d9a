//! Who is calling, and may they: bearer tokens, roles and rate limits for
//! every Flotilla HTTP server (the gateway, the inference worker, the node
//! agent).
//!
//! A tokens file ([`TokenFile`], JSON, written 0600) holds one record per
//! token: its name (the principal), its role, and the SHA-256 of the token;
//! the token itself is printed once by `flotilla token create` and never
//! stored. A server started with a tokens file loads it into a
//! [`TokenStore`] and wraps its app in [`authenticate`]:
//!
//! 1. the route's [`Access`] comes from the server's own table (a function
//!    of method and path, see [`HttpAuth::access`]); `/healthz` and
//!    `/readyz` are open, `/metrics` open or behind a token
//!    ([`MetricsAuth`]);
//! 2. `Authorization: Bearer <token>` is hashed and compared with every
//!    stored hash in constant time ([`TokenStore::lookup`]); missing or
//!    unknown: 401 `UNAUTHENTICATED` with `WWW-Authenticate`;
//! 3. the principal's bucket ([`RateLimiters`], per role, keyed by token
//!    name; anonymous callers by peer IP) must have a cell: else 429
//!    `RATE_LIMITED` with `Retry-After`; every limited response carries
//!    `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`;
//! 4. the role must allow the route's permission
//!    ([`flotilla_messages::auth::Role::allows`]): else 403 `FORBIDDEN`
//!    naming `missing_permission`.
//!
//! The handler finds the caller as a [`Principal`] in the request's
//! extensions (the gateway forwards its name on the bus). Each server
//! renders a [`Refusal`] in its own error shape ([`HttpAuth::render`]).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use base64::Engine as _;
use flotilla_messages::auth::{validate_principal, Permission, Role, ANONYMOUS};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a new token starts with, so a leaked one is recognisable (secret
/// scanners, logs).
pub const TOKEN_PREFIX: &str = "flt_";
/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "flotilla";

/// Why a tokens file or setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read or written.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a tokens file.
    #[error("tokens file {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the record.
        why: String,
    },
    /// A token name is not allowed, or is taken, or unknown.
    #[error("name: {0}")]
    Name(String),
    /// A rate limit setting is wrong.
    #[error("rate_limits: {0}")]
    RateLimit(String),
}

/// One stored token: who it is, what it may do, and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The principal (what events are attributed to).
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the token, lower-case hex.
    pub sha256: String,
}

/// The tokens file: `{"tokens": [{"name", "role", "sha256"}, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The records, in the order they were created.
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

impl TokenFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<TokenFile, AuthError> {
        let text = std::fs::read(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |why: String| AuthError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let file: TokenFile = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for (i, t) in file.tokens.iter().enumerate() {
            validate_principal(&t.name).map_err(|e| invalid(format!("tokens[{i}]: {e}")))?;
            if !seen.insert(t.name.as_str()) {
                return Err(invalid(format!("tokens[{i}]: name {:?} twice", t.name)));
            }
            let ok = t.sha256.len() == 64 && hex::decode(&t.sha256).is_ok();
            if !ok {
                return Err(invalid(format!("tokens[{i}].sha256: not 64 hex digits")));
            }
        }
        Ok(file)
    }

    /// Reads `path`, or an empty file when it does not exist yet.
    pub fn load_or_empty(path: &Path) -> Result<TokenFile, AuthError> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(TokenFile::default())
        }
    }

    /// Writes the file atomically (a 0600 temporary file beside it, synced,
    /// then renamed over it): a crash leaves the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut tmp = path.as_os_str().to_os_string();
        // An unguessable name, created new: a file or symlink planted in a
        // shared directory is never followed or overwritten.
        let mut nonce = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        tmp.push(format!(".tmp.{}", hex::encode(nonce)));
        let tmp = PathBuf::from(tmp);
        let mut body = serde_json::to_vec_pretty(self).map_err(|e| io(e.into()))?;
        body.push(b'\n');
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_all()));
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            std::fs::remove_file(&tmp).ok();
            return Err(io(e));
        }
        Ok(())
    }

    /// Adds a token named `name` with `role`; returns the token (shown once,
    /// stored only as its hash). A name that is taken, reserved or malformed
    /// is refused.
    pub fn create(&mut self, name: &str, role: Role) -> Result<String, AuthError> {
        validate_principal(name).map_err(AuthError::Name)?;
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(AuthError::Name(format!(
                "a token named {name:?} exists already (revoke it first)"
            )));
        }
        let token = new_token();
        self.tokens.push(TokenRecord {
            name: name.to_string(),
            role,
            sha256: hex::encode(token_hash(&token)),
        });
        Ok(token)
    }

    /// Removes the token named `name`.
    pub fn revoke(&mut self, name: &str) -> Result<(), AuthError> {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        if self.tokens.len() == before {
            return Err(AuthError::Name(format!("no token is named {name:?}")));
        }
        Ok(())
    }
}

/// A new random token: [`TOKEN_PREFIX`] and 32 bytes from the OS-seeded
/// CSPRNG, base64url without padding.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    format!("{TOKEN_PREFIX}{encoded}")
}

/// SHA-256 of a token: what the file stores and the lookup compares.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Who sent a request: a token's name and role, or `anonymous` (no role:
/// auth is off) when the server runs without tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name events are attributed to.
    pub name: String,
    /// The token's role; `None` for the anonymous caller of a server
    /// without auth, which may do everything.
    pub role: Option<Role>,
}

impl Principal {
    /// The caller of a server without auth.
    pub fn anonymous() -> Self {
        Principal {
            name: ANONYMOUS.to_string(),
            role: None,
        }
    }
}

/// The tokens a server accepts, by hash.
#[derive(Debug, Clone)]
pub struct TokenStore {
    entries: Vec<([u8; 32], Principal)>,
}

impl TokenStore {
    /// The store of a loaded tokens file.
    pub fn new(file: &TokenFile) -> Self {
        let entries = file
            .tokens
            .iter()
            .map(|t| {
                let mut hash = [0u8; 32];
                // `TokenFile::load` checked the hex; a bad record matches nothing.
                if let Ok(bytes) = hex::decode(&t.sha256) {
                    if bytes.len() == 32 {
                        hash.copy_from_slice(&bytes);
                    }
                }
                let principal = Principal {
                    name: t.name.clone(),
                    role: Some(t.role),
                };
                (hash, principal)
            })
            .collect();
        TokenStore { entries }
    }

    /// Reads a tokens file into a store.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        TokenFile::load(path).map(|f| Self::new(&f))
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of `presented`, if it is a stored token. The time
    /// taken does not depend on which token matches or how much of it:
    /// the presented token is hashed, and its hash is compared with every
    /// stored one in constant time, without stopping at a match.
    pub fn lookup(&self, presented: &str) -> Option<&Principal> {
        let hash = token_hash(presented);
        let mut found = u64::MAX;
        for (i, (stored, _)) in self.entries.iter().enumerate() {
            let equal = hash.ct_eq(stored);
            found = u64::conditional_select(&found, &(i as u64), equal);
        }
        self.entries.get(found as usize).map(|(_, p)| p)
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: probes.
    Open,
    /// Any valid token (routes no table names: they answer 404 to a caller
    /// who is known).
    Authenticated,
    /// A token whose role allows this.
    Needs(Permission),
}

/// Whether `/metrics` needs a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAuth {
    /// Anyone may scrape.
    #[default]
    Open,
    /// A token of any role ([`Permission::Metrics`]).
    Token,
}

impl MetricsAuth {
    /// Parses `open` or `token`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "open" => Ok(MetricsAuth::Open),
            "token" => Ok(MetricsAuth::Token),
            other => Err(format!("{other:?} is not open or token")),
        }
    }
}

/// One bucket's size: `per_second` cells come back every second, at most
/// `burst` are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl RateLimit {
    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// Who gets how much: a limit (or none) per role and for anonymous callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitTable {
    /// Per role; a role missing here is not limited.
    pub roles: HashMap<Role, RateLimit>,
    /// Callers without a token, keyed by peer IP (also who presents an
    /// unknown token); `None`: not limited.
    pub anonymous: Option<RateLimit>,
}

impl Default for RateLimitTable {
    /// Generous limits that only stop floods: commands and reads 100/s
    /// (burst 200), inference 1000/s (burst 2000); anonymous callers (the
    /// loopback default) are not limited.
    fn default() -> Self {
        let limit = |per_second, burst| RateLimit { per_second, burst };
        let roles = HashMap::from([
            (Role::Admin, limit(100, 200)),
            (Role::Operator, limit(100, 200)),
            (Role::Viewer, limit(100, 200)),
            (Role::Auditor, limit(100, 200)),
            (Role::Inference, limit(1000, 2000)),
        ]);
        RateLimitTable {
            roles,
            anonymous: None,
        }
    }
}

impl RateLimitTable {
    /// Sets the limit of `who` (a role name or `anonymous`); `None` lifts it.
    pub fn set(&mut self, who: &str, limit: Option<RateLimit>) -> Result<(), AuthError> {
        if let Some(l) = limit {
            if l.per_second == 0 || l.burst == 0 {
                return Err(AuthError::RateLimit(format!(
                    "{who}: per_second and burst must be at least 1 (or `off`)"
                )));
            }
        }
        if who == ANONYMOUS {
            self.anonymous = limit;
            return Ok(());
        }
        let role =
            Role::parse(who).map_err(|e| AuthError::RateLimit(format!("{e} or anonymous")))?;
        match limit {
            Some(l) => self.roles.insert(role, l),
            None => self.roles.remove(&role),
        };
        Ok(())
    }

    /// Applies one `WHO=PER_SECOND/BURST` or `WHO=off` (the flag's and the
    /// environment's spelling).
    pub fn apply_spec(&mut self, spec: &str) -> Result<(), AuthError> {
        let bad = || {
            AuthError::RateLimit(format!(
                "{spec:?}: expected ROLE=PER_SECOND/BURST or ROLE=off, e.g. operator=50/100"
            ))
        };
        let (who, value) = spec.trim().split_once('=').ok_or_else(bad)?;
        let limit = match value.trim() {
            "off" => None,
            v => {
                let (rate, burst) = v.split_once('/').ok_or_else(bad)?;
                let per_second = rate.trim().parse().map_err(|_| bad())?;
                let burst = burst.trim().parse().map_err(|_| bad())?;
                Some(RateLimit { per_second, burst })
            }
        };
        self.set(who.trim(), limit)
    }
}

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The live buckets: one keyed limiter per limited role (keyed by token
/// name) and one for anonymous callers (keyed by peer IP).
pub struct RateLimiters {
    roles: HashMap<Role, (RateLimit, KeyedLimiter)>,
    anonymous: Option<(RateLimit, KeyedLimiter)>,
    checks: AtomicU64,
}

/// Checks between two sweeps of idle buckets (so a scan of many peer IPs
/// cannot grow the table without bound).
const SWEEP_EVERY: u64 = 4096;

/// A bucket's answer, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// `RateLimit-Limit`: the burst.
    pub limit: u32,
    /// `RateLimit-Remaining`: requests left right now.
    pub remaining: u32,
    /// `RateLimit-Reset`: seconds until the bucket is full again (or, when
    /// refused, until the next request may pass).
    pub reset_secs: u64,
    /// Whether the request was refused.
    pub refused: bool,
}

impl RateLimiters {
    /// Buckets for `table`.
    pub fn new(table: &RateLimitTable) -> Self {
        let limiter = |l: &RateLimit| {
            l.quota()
                .map(|q| (*l, RateLimiter::keyed(q).with_middleware()))
        };
        RateLimiters {
            roles: table
                .roles
                .iter()
                .filter_map(|(role, l)| limiter(l).map(|x| (*role, x)))
                .collect(),
            anonymous: table.anonymous.as_ref().and_then(limiter),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes a cell from the bucket of `principal` (`None`: an anonymous or
    /// unauthenticated caller at `peer`); `None` when it is not limited.
    pub fn check(&self, principal: Option<&Principal>, peer: Option<IpAddr>) -> Option<Bucket> {
        let (key, entry) = match principal.and_then(|p| p.role.map(|r| (p, r))) {
            Some((p, role)) => (p.name.clone(), self.roles.get(&role)?),
            None => {
                let ip = peer.map(|ip| ip.to_string()).unwrap_or_default();
                (ip, self.anonymous.as_ref()?)
            }
        };
        self.sweep();
        let (limit, limiter) = entry;
        let per_cell = 1.0 / f64::from(limit.per_second.max(1));
        Some(match limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = limit.burst.saturating_sub(remaining);
                Bucket {
                    limit: limit.burst,
                    remaining,
                    reset_secs: (f64::from(missing) * per_cell).ceil() as u64,
                    refused: false,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                Bucket {
                    limit: limit.burst,
                    remaining: 0,
                    reset_secs: whole_seconds(wait),
                    refused: true,
                }
            }
        })
    }

    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return;
        }
        for (_, limiter) in self.roles.values().chain(self.anonymous.iter()) {
            limiter.retain_recent();
        }
    }
}

/// A wait in whole seconds, rounded up, at least 1 (`Retry-After: 0` would
/// invite an immediate retry).
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Why a request is refused before its handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token, a malformed `Authorization`, or an unknown token (401).
    Unauthenticated(String),
    /// The role lacks this permission (403).
    Forbidden {
        /// Who asked.
        principal: String,
        /// Their role.
        role: Role,
        /// What the route needs.
        missing: Permission,
    },
    /// Over the rate limit (429).
    RateLimited {
        /// Who asked (a token name, or the peer IP).
        principal: String,
        /// When to try again.
        retry_after_secs: u64,
    },
}

impl Refusal {
    /// The message for people.
    pub fn message(&self) -> String {
        match self {
            Refusal::Unauthenticated(why) => why.clone(),
            Refusal::Forbidden {
                principal,
                role,
                missing,
            } => format!("token {principal:?} (role {role}) lacks the {missing} permission"),
            Refusal::RateLimited {
                principal,
                retry_after_secs,
            } => format!("{principal} is over its rate limit; retry in {retry_after_secs} s"),
        }
    }

    /// The permission a 403 names.
    pub fn missing_permission(&self) -> Option<Permission> {
        match self {
            Refusal::Forbidden { missing, .. } => Some(*missing),
            _ => None,
        }
    }
}

/// How a server renders a refusal in its own error shape (the headers
/// `WWW-Authenticate`, `Retry-After` and `RateLimit-*` are added by
/// [`authenticate`]).
pub type RenderRefusal = fn(&ServiceRequest, &Refusal) -> HttpResponse;

/// A server's authentication, authorization and rate limits; put it in
/// the app's data (`web::Data<HttpAuth>`) and wrap the app in
/// `from_fn(authenticate)`.
pub struct HttpAuth {
    /// The accepted tokens; `None`: auth is off, every caller is anonymous.
    pub tokens: Option<TokenStore>,
    /// Whether `/metrics` needs a token.
    pub metrics: MetricsAuth,
    /// The server's route table: what a method and path need.
    pub access: fn(&Method, &str) -> Access,
    /// The buckets; `None`: no rate limits (the agent).
    pub limits: Option<RateLimiters>,
    /// The server's error shape.
    pub render: RenderRefusal,
}

/// What `/metrics` needs under `metrics`.
pub fn metrics_access(metrics: MetricsAuth) -> Access {
    match metrics {
        MetricsAuth::Open => Access::Open,
        MetricsAuth::Token => Access::Needs(Permission::Metrics),
    }
}

/// The probes every server keeps open.
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The path the router matches `req` on: percent-decoded (but for `%2F`,
/// `%25` and `+`). Every check decides on this path, never on the raw
/// `req.path()`, or `/v1/%63md/...` would pass as an unknown route and then
/// be routed to `/v1/cmd/...`.
pub fn routed_path(req: &ServiceRequest) -> &str {
    req.match_info().as_str()
}

/// The bearer token of an `Authorization` value, if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl HttpAuth {
    /// What a request for `method` and `path` needs: `/metrics` as
    /// [`HttpAuth::metrics`] says, the probes nothing, any other route what
    /// the server's table says.
    pub fn access_of(&self, method: &Method, path: &str) -> Access {
        if path == "/metrics" {
            metrics_access(self.metrics)
        } else if is_probe(path) {
            Access::Open
        } else {
            (self.access)(method, path)
        }
    }

    /// Decides on `req`: the caller (to put in the extensions), the bucket
    /// it drew from, or why it is refused (and the bucket, for the headers).
    fn decide(&self, req: &ServiceRequest) -> (Result<Principal, Refusal>, Option<Bucket>) {
        let access = self.access_of(req.method(), routed_path(req));
        if access == Access::Open {
            return (Ok(Principal::anonymous()), None);
        }
        let peer = req.peer_addr().map(|a: SocketAddr| a.ip());
        let caller = match &self.tokens {
            None => Ok(Principal::anonymous()),
            Some(store) => self.identify(store, req),
        };
        let bucket = self
            .limits
            .as_ref()
            .and_then(|l| l.check(caller.as_ref().ok().filter(|p| p.role.is_some()), peer));
        if let Some(b) = bucket.filter(|b| b.refused) {
            let principal = match &caller {
                Ok(p) if p.role.is_some() => p.name.clone(),
                _ => peer
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| ANONYMOUS.into()),
            };
            let refusal = Refusal::RateLimited {
                principal,
                retry_after_secs: b.reset_secs,
            };
            return (Err(refusal), bucket);
        }
        let decided = caller.and_then(|p| match (p.role, access) {
            (Some(role), Access::Needs(missing)) if !role.allows(missing) => {
                Err(Refusal::Forbidden {
                    principal: p.name,
                    role,
                    missing,
                })
            }
            _ => Ok(p),
        });
        (decided, bucket)
    }

    fn identify(&self, store: &TokenStore, req: &ServiceRequest) -> Result<Principal, Refusal> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(Refusal::Unauthenticated(
                "this route needs Authorization: Bearer <token>".into(),
            ));
        };
        let token = value.to_str().ok().and_then(bearer).ok_or_else(|| {
            Refusal::Unauthenticated("Authorization must be Bearer <token>".into())
        })?;
        store
            .lookup(token)
            .cloned()
            .ok_or_else(|| Refusal::Unauthenticated("the bearer token is not known".into()))
    }
}

/// The middleware: authenticates, rate-limits and authorizes every request
/// by the [`HttpAuth`] in the app's data (a server without one refuses
/// everything but probes: failing closed).
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(auth) = req.app_data::<web::Data<HttpAuth>>().cloned() else {
        if is_probe(routed_path(&req)) {
            return Ok(next.call(req).await?.map_into_boxed_body());
        }
        tracing::error!("HTTP auth middleware without its settings: refusing");
        return Ok(req.into_response(HttpResponse::InternalServerError().finish()));
    };
    let (decided, bucket) = auth.decide(&req);
    let mut res = match decided {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.call(req).await?.map_into_boxed_body()
        }
        Err(refusal) => {
            let mut response = (auth.render)(&req, &refusal);
            refusal_headers(&refusal, response.headers_mut());
            req.into_response(response)
        }
    };
    if let Some(b) = bucket {
        bucket_headers(&b, res.headers_mut());
    }
    Ok(res)
}

fn refusal_headers(refusal: &Refusal, headers: &mut actix_web::http::header::HeaderMap) {
    match refusal {
        Refusal::Unauthenticated(_) => {
            let value = format!("Bearer realm=\"{REALM}\"");
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        Refusal::RateLimited {
            retry_after_secs, ..
        } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        Refusal::Forbidden { .. } => {}
    }
}

fn bucket_headers(b: &Bucket, headers: &mut actix_web::http::header::HeaderMap) {
    let set = |headers: &mut actix_web::http::header::HeaderMap, name, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    set(headers, "ratelimit-limit", u64::from(b.limit));
    set(headers, "ratelimit-remaining", u64::from(b.remaining));
    set(headers, "ratelimit-reset", b.reset_secs);
}

/// The caller of the request being served (the anonymous one when the
/// middleware did not run).
pub fn principal_of(req: &actix_web::HttpRequest) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

/// Why a server may not start: bound beyond loopback with no tokens file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what}: refusing to listen on {addr} without authentication: pass --tokens FILE \
     (see `flotilla token create`), or --insecure-no-auth to accept anyone who can reach it"
)]
pub struct OpenBindRefused {
    /// The server (`http`, `worker http`, `agent http`).
    pub what: String,
    /// The address.
    pub addr: SocketAddr,
}

/// Whether a server may listen on `addr`: always with tokens, on loopback
/// without, elsewhere only when the operator said `insecure_no_auth` (then
/// a warning is logged, on every start).
pub fn check_bind(
    what: &str,
    addr: SocketAddr,
    has_tokens: bool,
    insecure_no_auth: bool,
) -> Result<(), OpenBindRefused> {
    if has_tokens || addr.ip().is_loopback() {
        return Ok(());
    }
    if insecure_no_auth {
        tracing::warn!(
            %addr,
            "{what}: --insecure-no-auth: listening beyond loopback WITHOUT authentication; \
             anyone who can reach {addr} may use every route"
        );
        return Ok(());
    }
    Err(OpenBindRefused {
        what: what.to_string(),
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::{middleware::from_fn, App};

    fn file_with(names: &[(&str, Role)]) -> (TokenFile, Vec<String>) {
        let mut file = TokenFile::default();
        let tokens = names
            .iter()
            .map(|(n, r)| file.create(n, *r).unwrap())
            .collect();
        (file, tokens)
    }

    #[test]
    fn tokens_are_random_prefixed_and_stored_only_as_hashes() {
        let (file, tokens) = file_with(&[("alice", Role::Operator), ("bob", Role::Viewer)]);
        assert_ne!(tokens[0], tokens[1]);
        for t in &tokens {
            assert!(
                t.starts_with(TOKEN_PREFIX) && t.len() == TOKEN_PREFIX.len() + 43,
                "{t}"
            );
        }
        let json = serde_json::to_string(&file).unwrap();
        assert!(!json.contains(&tokens[0][TOKEN_PREFIX.len()..]), "{json}");
        assert!(json.contains(&hex::encode(token_hash(&tokens[0]))));
    }

    #[test]
    fn names_are_checked_unique_and_revocable() {
        let (mut file, _) = file_with(&[("alice", Role::Operator)]);
        let dup = file.create("alice", Role::Admin).unwrap_err().to_string();
        assert!(dup.contains("exists already"), "{dup}");
        assert!(file
            .create("anonymous", Role::Admin)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        assert!(file.create("a b", Role::Admin).is_err());
        file.revoke("alice").unwrap();
        assert!(file
            .revoke("alice")
            .unwrap_err()
            .to_string()
            .contains("no token"));
    }

    #[test]
    fn lookup_finds_each_token_and_nothing_else() {
        let (file, tokens) = file_with(&[
            ("alice", Role::Operator),
            ("bob", Role::Viewer),
            ("carol", Role::Inference),
        ]);
        let store = TokenStore::new(&file);
        for (t, name) in tokens.iter().zip(["alice", "bob", "carol"]) {
            assert_eq!(store.lookup(t).map(|p| p.name.as_str()), Some(name));
        }
        assert_eq!(store.lookup("flt_nope"), None);
        assert_eq!(store.lookup(&tokens[0][..tokens[0].len() - 1]), None);
        assert_eq!(TokenStore::new(&TokenFile::default()).lookup(""), None);
    }

    #[test]
    fn the_file_is_written_0600_and_read_back_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("flotilla-auth-{}", std::process::id()));
        let path = dir.join("tokens.json");
        let (file, _) = file_with(&[("alice", Role::Operator)]);
        file.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(TokenFile::load(&path).unwrap(), file);
        std::fs::write(
            &path,
            r#"{"tokens":[{"name":"x","role":"root","sha256":"00"}]}"#,
        )
        .unwrap();
        let e = TokenFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("tokens file") && e.contains("root"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn rate_limit_specs_parse_and_bad_ones_name_the_setting() {
        let mut t = RateLimitTable::default();
        t.apply_spec("operator=5/10").unwrap();
        t.apply_spec("anonymous=1/2").unwrap();
        t.apply_spec("viewer=off").unwrap();
        assert_eq!(
            t.roles[&Role::Operator],
            RateLimit {
                per_second: 5,
                burst: 10
            }
        );
        assert_eq!(
            t.anonymous,
            Some(RateLimit {
                per_second: 1,
                burst: 2
            })
        );
        assert!(!t.roles.contains_key(&Role::Viewer));
        for bad in [
            "operator",
            "operator=5",
            "root=1/1",
            "admin=0/1",
            "admin=x/1",
        ] {
            let e = t.apply_spec(bad).unwrap_err().to_string();
            assert!(e.starts_with("rate_limits:"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_bucket_empties_per_principal() {
        let mut table = RateLimitTable::default();
        table.apply_spec("operator=1/3").unwrap();
        let limits = RateLimiters::new(&table);
        let alice = Principal {
            name: "alice".into(),
            role: Some(Role::Operator),
        };
        let bob = Principal {
            name: "bob".into(),
            role: Some(Role::Operator),
        };
        let seen: Vec<_> = (0..4)
            .map(|_| limits.check(Some(&alice), None).unwrap())
            .collect();
        assert_eq!(
            seen.iter().map(|b| b.remaining).collect::<Vec<_>>(),
            vec![2, 1, 0, 0]
        );
        assert!(seen[3].refused && seen[3].reset_secs >= 1);
        assert!(
            !limits.check(Some(&bob), None).unwrap().refused,
            "bob has his own bucket"
        );
        assert_eq!(
            limits.check(None, None),
            None,
            "anonymous is not limited by default"
        );
    }

    #[test]
    fn open_binds_need_tokens_or_the_insecure_flag() {
        let public: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(check_bind("http", local, false, false).is_ok());
        assert!(check_bind("http", public, true, false).is_ok());
        assert!(check_bind("http", public, false, true).is_ok());
        let e = check_bind("http", public, false, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0.0.0.0:80") && e.contains("--tokens FILE"),
            "{e}"
        );
        assert!(e.contains("--insecure-no-auth"), "{e}");
    }

    fn render(_: &ServiceRequest, r: &Refusal) -> HttpResponse {
        let status = match r {
            Refusal::Unauthenticated(_) => 401,
            Refusal::Forbidden { .. } => 403,
            Refusal::RateLimited { .. } => 429,
        };
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(serde_json::json!({"missing": r.missing_permission()}))
    }

    fn table(_: &Method, path: &str) -> Access {
        match path {
            "/cmd" => Access::Needs(Permission::Command),
            _ => Access::Authenticated,
        }
    }

    fn h<B>(res: &ServiceResponse<B>, name: impl actix_web::http::header::AsHeaderName) -> String {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    #[actix_web::test]
    async fn the_middleware_answers_401_403_429_and_passes_the_principal() {
        let (file, tokens) = file_with(&[("alice", Role::Operator), ("vic", Role::Viewer)]);
        let mut limits = RateLimitTable::default();
        limits.apply_spec("viewer=1/2").unwrap();
        let auth = HttpAuth {
            tokens: Some(TokenStore::new(&file)),
            metrics: MetricsAuth::Token,
            access: table,
            limits: Some(RateLimiters::new(&limits)),
            render,
        };
        let app = init_service(
            App::new()
                .app_data(web::Data::new(auth))
                .wrap(from_fn(authenticate))
                .default_service(web::to(|req: actix_web::HttpRequest| async move {
                    HttpResponse::Ok().body(principal_of(&req).name)
                })),
        )
        .await;
        let call = |path: &str, token: Option<&str>| {
            let mut r = TestRequest::get().uri(path);
            if let Some(t) = token {
                r = r.insert_header((header::AUTHORIZATION, format!("Bearer {t}")));
            }
            r.to_request()
        };
        let res = call_service(&app, call("/healthz", None)).await;
        assert_eq!(res.status(), 200);
        let res = call_service(&app, call("/cmd", None)).await;
        assert_eq!(res.status(), 401);
        assert_eq!(
            h(&res, header::WWW_AUTHENTICATE),
            "Bearer realm=\"flotilla\""
        );
        assert_eq!(
            call_service(&app, call("/metrics", None)).await.status(),
            401
        );
        assert_eq!(
            call_service(&app, call("/cmd", Some("flt_x")))
                .await
                .status(),
            401
        );
        let res = call_service(&app, call("/cmd", Some(&tokens[0]))).await;
        assert_eq!(res.status(), 200);
        assert_eq!(actix_web::test::read_body(res).await, "alice");
        let res = call_service(&app, call("/cmd", Some(&tokens[1]))).await;
        assert_eq!(res.status(), 403);
        assert_eq!(h(&res, "ratelimit-remaining"), "1");
        let body: serde_json::Value = actix_web::test::read_body_json(res).await;
        assert_eq!(body["missing"], "command");
        assert_eq!(
            call_service(&app, call("/other", Some(&tokens[1])))
                .await
                .status(),
            200
        );
        let res = call_service(&app, call("/other", Some(&tokens[1]))).await;
        assert_eq!(res.status(), 429);
        assert!(h(&res, header::RETRY_AFTER).parse::<u64>().unwrap() >= 1);
        assert_eq!(h(&res, "ratelimit-limit"), "2");
        assert_eq!(h(&res, "ratelimit-remaining"), "0");
    }
}
