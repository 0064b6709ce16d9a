//! What keeps a web page in the user's browser from driving a local
//! Flotilla (CSRF and DNS rebinding).
//!
//! A page can send "simple" cross-origin requests without a CORS preflight:
//! `text/plain`, form or multipart bodies. So a state-changing route accepts
//! only JSON or MessagePack bodies ([`command_media_type`]), a request whose
//! `Origin` is foreign is refused ([`RequestPolicy::origin_allowed`]), and
//! the `Host` must be an allowed name ([`RequestPolicy::host_allowed`]): a
//! rebound DNS name pointing at 127.0.0.1 is not one. A body is read up to
//! a limit and no further ([`read_limited`]).

use actix_web::web::{BytesMut, Payload};
use flotilla_messages::{Encoding, ErrorCode, Rejection};
use futures::StreamExt;
use std::net::{IpAddr, SocketAddr};

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// It is longer than the limit (in bytes).
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    /// The connection failed while it was read.
    #[error("cannot read the body: {0}")]
    Unreadable(String),
}

/// Reads a request body of at most `limit` bytes, stopping at the first
/// chunk that would go over it.
pub async fn read_limited(mut payload: Payload, limit: usize) -> Result<BytesMut, BodyError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Host names that always mean this machine.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The media types a browser may send cross-origin without a CORS preflight.
const SIMPLE_TYPES: [&str; 3] = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

/// The encoding a command's `Content-Type` declares
/// ([`Encoding::from_content_type`]: JSON, any `+json` type, MessagePack),
/// or why it is refused:
/// none or a simple type (what a page can send cross-origin without a
/// preflight) is `UNSUPPORTED_MEDIA_TYPE`; another type that is not JSON or
/// MessagePack is `MALFORMED_BODY`, as on NATS.
pub fn command_media_type(content_type: Option<&str>) -> Result<Encoding, Rejection> {
    let unsupported = |why: String| Rejection::new(ErrorCode::UnsupportedMediaType, why);
    let Some(declared) = content_type.filter(|ct| !ct.trim().is_empty()) else {
        return Err(unsupported(
            "a command needs Content-Type: application/json or application/msgpack".into(),
        ));
    };
    if SIMPLE_TYPES.contains(&media_type(declared).as_str()) {
        return Err(unsupported(format!(
            "Content-Type {declared} is not accepted: send application/json or application/msgpack"
        )));
    }
    Encoding::from_content_type(declared)
        .map_err(|e| Rejection::new(ErrorCode::MalformedBody, e.to_string()))
}

/// The media type without parameters, lower case (`Text/Plain; x=1` → `text/plain`).
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The name part of a `Host` value: `[::1]:8080` → `[::1]`, `a:80` → `a`.
pub fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            if name.contains(':') && !name.starts_with('[') {
                host // a bare IPv6 address has no port
            } else {
                name
            }
        }
        _ => host,
    }
}

/// Whether a host name is an IP literal: no DNS answer can rebind it.
fn is_ip_literal(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok()
}

/// Whether a host name is safe from DNS rebinding whatever the bind
/// address: a loopback name or an IP literal.
pub fn rebinding_safe(host: &str) -> bool {
    let name = host_name(host);
    LOOPBACK_NAMES.iter().any(|l| l.eq_ignore_ascii_case(name)) || is_ip_literal(name)
}

/// Whether `host` (a `Host` value, port ignored) matches one of `patterns`:
/// `*`, an exact name, or `*.domain` for its subdomains (Starlette's
/// TrustedHostMiddleware rules), without regard to case.
pub fn host_listed(patterns: &[String], host: &str) -> bool {
    let name = host_name(host).to_ascii_lowercase();
    patterns
        .iter()
        .any(|pattern| match pattern.strip_prefix("*.") {
            _ if pattern == "*" => true,
            Some(domain) => name.ends_with(&format!(".{}", domain.to_ascii_lowercase())),
            None => pattern.eq_ignore_ascii_case(&name),
        })
}

/// Which `Host` and `Origin` values the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Allowed host names (ports are ignored): exact, `*.domain`, or `*`.
    /// Empty: loopback names and IP literals only.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed besides the gateway's own, exact (`*` for any).
    pub allowed_origins: Vec<String>,
}

impl RequestPolicy {
    /// The policy for a gateway bound to `addr`: `hosts` if given, else the
    /// loopback names, plus the bound address when it is not loopback; a
    /// wildcard bind (`0.0.0.0`) allows IP literals, as they cannot be rebound.
    pub fn for_bind(addr: SocketAddr, hosts: Vec<String>, origins: Vec<String>) -> Self {
        let allowed_hosts = if !hosts.is_empty() {
            hosts
        } else if addr.ip().is_unspecified() {
            Vec::new()
        } else {
            let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
            if !addr.ip().is_loopback() {
                names.push(
                    SocketAddr::new(addr.ip(), 0)
                        .to_string()
                        .trim_end_matches(":0")
                        .into(),
                );
            }
            names
        };
        RequestPolicy {
            allowed_hosts,
            allowed_origins: origins,
        }
    }

    /// Whether `host` (a `Host` header value, port included) is allowed.
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.allowed_hosts.is_empty() {
            return rebinding_safe(host);
        }
        host_listed(&self.allowed_hosts, host)
    }

    /// Whether a request to `scheme://host` may come from `origin`: its own
    /// origin, or one of the allowed ones.
    pub fn origin_allowed(&self, origin: &str, scheme: &str, host: &str) -> bool {
        origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
            || self
                .allowed_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_need_json_or_msgpack_and_simple_types_are_unsupported() {
        let code = |ct| command_media_type(ct).map_err(|r| r.code);
        assert_eq!(code(Some("application/json")), Ok(Encoding::Json));
        assert_eq!(
            code(Some("Application/JSON; charset=utf-8")),
            Ok(Encoding::Json)
        );
        for structured in [
            "application/vnd.api+json",
            "application/problem+json; charset=utf-8",
        ] {
            assert_eq!(code(Some(structured)), Ok(Encoding::Json), "{structured}");
        }
        for msgpack in [
            "application/msgpack",
            "application/x-msgpack",
            "application/vnd.msgpack",
        ] {
            assert_eq!(code(Some(msgpack)), Ok(Encoding::MsgPack));
        }
        for simple in [
            "text/plain",
            "Text/Plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ] {
            assert_eq!(
                code(Some(simple)),
                Err(ErrorCode::UnsupportedMediaType),
                "{simple}"
            );
        }
        assert_eq!(code(None), Err(ErrorCode::UnsupportedMediaType));
        assert_eq!(code(Some("text/csv")), Err(ErrorCode::MalformedBody));
    }

    #[test]
    fn host_names_drop_the_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
    }

    #[test]
    fn a_loopback_bind_allows_loopback_names_on_any_port_only() {
        let p = RequestPolicy::for_bind("127.0.0.1:8080".parse().unwrap(), vec![], vec![]);
        for host in ["localhost:9", "LOCALHOST", "127.0.0.1:8080", "[::1]:1"] {
            assert!(p.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1",
        ] {
            assert!(!p.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn other_binds_allow_their_address_or_ip_literals_or_the_configured_hosts() {
        let p = RequestPolicy::for_bind("10.0.0.5:80".parse().unwrap(), vec![], vec![]);
        assert!(p.host_allowed("10.0.0.5:80") && p.host_allowed("localhost"));
        assert!(!p.host_allowed("10.0.0.6") && !p.host_allowed("evil.example"));
        let any = RequestPolicy::for_bind("0.0.0.0:80".parse().unwrap(), vec![], vec![]);
        assert!(any.host_allowed("10.1.2.3:80") && any.host_allowed("[fe80::1]:80"));
        assert!(!any.host_allowed("evil.example"));
        let hosts = vec!["flotilla.svc".to_string(), "*.corp.example".to_string()];
        let set = RequestPolicy::for_bind("0.0.0.0:80".parse().unwrap(), hosts, vec![]);
        assert!(set.host_allowed("flotilla.svc:8080") && set.host_allowed("a.corp.example"));
        assert!(!set.host_allowed("corp.example") && !set.host_allowed("127.0.0.1"));
    }

    #[test]
    fn origins_must_be_the_gateways_own_or_allowed() {
        let origins = vec!["https://ui.example".to_string()];
        let p = RequestPolicy::for_bind("127.0.0.1:8080".parse().unwrap(), vec![], origins);
        assert!(p.origin_allowed("http://127.0.0.1:8080", "http", "127.0.0.1:8080"));
        assert!(p.origin_allowed("https://ui.example", "http", "127.0.0.1:8080"));
        assert!(!p.origin_allowed("http://evil.example", "http", "127.0.0.1:8080"));
        assert!(!p.origin_allowed("http://127.0.0.1:9999", "http", "127.0.0.1:8080"));
        assert!(!p.origin_allowed("null", "http", "127.0.0.1:8080"));
    }
}
