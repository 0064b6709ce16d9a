//! The NATS backend: [`NatsBus`] ([`Bus`] over async-nats core) and
//! [`JetStreamLog`] ([`crate::EventLog`] over a JetStream stream plus a KV
//! bucket for snapshots), [`NatsLeases`] ([`crate::LeaseStore`] over a KV
//! bucket of its own) and [`server::NatsServer`], a local nats-server as a
//! child process.
//!
//! This is the backend for many processes and machines; the embedded backend
//! (`crate::embedded`) is its single-process twin, and both pass the same
//! suite in `crate::conformance`. Subjects come from
//! `flotilla_messages::Subjects`; headers cross the wire unchanged in both
//! directions.

mod connect;
mod lease;
mod log;
mod read;
pub mod server;
mod snapshots;

pub use connect::{
    inbox_prefix, load_nkey_seed, LoadedAuth, NatsAuth, NatsAuthError, SecretSource,
};
pub use lease::{NatsLeases, LEASE_BUCKET};
pub use log::{JetStreamLog, BATCH_BASE_HEADER, BATCH_END_HEADER, SEQ_HEADER, STREAM_NAME};
pub use snapshots::SNAPSHOT_BUCKET;

use crate::{Bus, BusError, Headers, Message, Subscription};
use async_nats::client::RequestErrorKind;
use async_nats::{Client, ConnectErrorKind, ConnectOptions, HeaderMap, ServerAddr};
use async_trait::async_trait;
use flotilla_messages::subjects::{is_publishable, is_valid_pattern};
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Initial-connect attempts before [`NatsBus::connect`] gives up.
const CONNECT_ATTEMPTS: u32 = 8;
/// The longest pause between two initial-connect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A [`Bus`] over a NATS connection (async-nats core).
///
/// Cloning shares the connection. Reconnects after the initial connect are
/// handled by async-nats; connection events are logged with `tracing`.
#[derive(Clone, Debug)]
pub struct NatsBus {
    client: Client,
    /// The server's last permissions violation on this connection, so a
    /// request it refused fails saying so instead of timing out mutely.
    violation: Arc<Mutex<Option<String>>>,
}

/// Why [`NatsBus::connect_with`] has no connection.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    /// A credential or TLS setting cannot be used (checked before connecting).
    #[error(transparent)]
    Settings(#[from] NatsAuthError),
    /// The server refused the credential presented.
    #[error("authorization violation: the server refused {credential}")]
    Refused {
        /// The URL, any secret in it redacted.
        url: String,
        /// Which credential was presented (never its secret).
        credential: String,
    },
    /// No connection after every attempt (server down, TLS handshake failed, …).
    #[error("{error}")]
    Unreachable {
        /// The URL, any secret in it redacted.
        url: String,
        /// The last attempt's error.
        error: String,
    },
}

impl NatsConnectError {
    /// Whether trying again cannot help: a bad setting or a refused
    /// credential stays so until the configuration changes.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, NatsConnectError::Unreachable { .. })
    }
}

impl From<NatsConnectError> for BusError {
    fn from(e: NatsConnectError) -> BusError {
        match &e {
            NatsConnectError::Settings(_) => BusError::Connection(e.to_string()),
            NatsConnectError::Refused { url, .. } | NatsConnectError::Unreachable { url, .. } => {
                BusError::Connection(format!("{url}: {e}"))
            }
        }
    }
}

impl NatsBus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`) with the
    /// credentials in the URL, if any; see [`NatsBus::connect_with`].
    pub async fn connect(url: &str) -> Result<NatsBus, BusError> {
        Ok(Self::connect_with(url, &NatsAuth::default()).await?)
    }

    /// Connects to `url` with the credential and TLS settings of `auth`
    /// (checked first, see [`NatsAuth::load`]), retrying the first
    /// connection with a bounded exponential backoff. `tls://` URLs, or a
    /// CA file or client certificate in `auth`, require TLS.
    pub async fn connect_with(url: &str, auth: &NatsAuth) -> Result<NatsBus, NatsConnectError> {
        let loaded = auth.load()?;
        let shown = redacted(url);
        let credential = presented(url, &loaded)?;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        let violation = Arc::new(Mutex::new(None));
        loop {
            let options = loaded.apply(with_credentials(connect_options(&violation), url));
            match options.connect(servers(url)).await {
                Ok(client) => return Ok(NatsBus { client, violation }),
                // Wrong credentials stay wrong: trying again only delays the error.
                Err(e) if e.kind() == ConnectErrorKind::AuthorizationViolation => {
                    return Err(NatsConnectError::Refused {
                        url: shown,
                        credential,
                    })
                }
                Err(e) if attempt >= CONNECT_ATTEMPTS => {
                    return Err(NatsConnectError::Unreachable {
                        url: shown,
                        error: e.to_string(),
                    })
                }
                Err(e) => {
                    tracing::warn!(url = %shown, attempt, error = %e, "NATS connect failed, retrying")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    /// Wraps an existing async-nats client.
    pub fn from_client(client: Client) -> NatsBus {
        NatsBus {
            client,
            violation: Arc::default(),
        }
    }

    /// The server's permissions violation for `subject`, if it refused it.
    fn refused(&self, subject: &str) -> Option<String> {
        let last = self.violation.lock().unwrap_or_else(|e| e.into_inner());
        last.clone()
            .filter(|m| m.contains(&format!("\"{subject}\"")))
    }

    /// The underlying async-nats client (e.g. for [`JetStreamLog::open`]).
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

/// Which credential a connection to `url` with `loaded` presents, for a
/// refusal's message: the URL's or the settings', never both.
fn presented(url: &str, loaded: &LoadedAuth) -> Result<String, NatsAuthError> {
    let in_url = credentials(url);
    if in_url.is_some() && loaded.has_credential() {
        return Err(NatsAuthError::Conflict {
            setting: "nats",
            what: format!(
                "{} carries a credential and {} is set; use one",
                redacted(url),
                loaded.described()
            ),
        });
    }
    Ok(match in_url {
        Some(Credentials::UserAndPassword(user, _)) => {
            format!("the user {user} and password in the URL")
        }
        Some(Credentials::Token(_)) => "the token in the URL".to_string(),
        None => loaded.described().to_string(),
    })
}

/// The servers of a comma-separated URL list (`nats://a:4222,nats://b:4222`):
/// async-nats parses a `&str` as one server, so a cluster's list must be
/// split before it connects (it then fails over between them).
fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .collect()
}

/// `url` with any password (or token) in its user part replaced by `***`,
/// for errors and logs: a secret in a URL must never be printed.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let Some((scheme, rest)) = one.split_once("://") else {
                return one.to_string();
            };
            match rest.rsplit_once('@') {
                Some((user, host)) => match user.split_once(':') {
                    Some((name, _)) => format!("{scheme}://{name}:***@{host}"),
                    None => format!("{scheme}://***@{host}"),
                },
                None => one.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The user and password, or the token, that the first server of `url`
/// with any names (`nats://user:pass@host`, `nats://token@host`), decoded.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    UserAndPassword(String, String),
    Token(String),
}

fn credentials(url: &str) -> Option<Credentials> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .to_string()
    };
    url.split(',').find_map(|one| {
        let addr = one.trim().parse::<ServerAddr>().ok()?;
        let user = decode(addr.username()?);
        Some(match addr.password() {
            Some(pass) => Credentials::UserAndPassword(user, decode(pass)),
            None => Credentials::Token(user),
        })
    })
}

/// `options` with the credentials in `url`: async-nats takes them only from
/// its options and ignores those in the URL, so without this every server
/// that requires them refuses the connection.
fn with_credentials(options: ConnectOptions, url: &str) -> ConnectOptions {
    match credentials(url) {
        Some(Credentials::UserAndPassword(user, pass)) => options.user_and_password(user, pass),
        Some(Credentials::Token(token)) => options.token(token),
        None => options,
    }
}

/// Options of every connection: connection events logged, the server's
/// permissions violations logged as warnings and kept in `violation`.
fn connect_options(violation: &Arc<Mutex<Option<String>>>) -> ConnectOptions {
    let violation = violation.clone();
    ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let violation = violation.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    async_nats::Event::ServerError(e)
                        if e.to_string().contains("Permissions Violation") =>
                    {
                        let message = e.to_string();
                        tracing::warn!(error = %message, "NATS refused a subject to this user");
                        *violation.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
                    }
                    other => tracing::info!(event = %other, "NATS connection event"),
                }
            }
        })
}

/// Our headers as a NATS header map.
pub(crate) fn to_header_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(name.as_str(), value.as_str());
    }
    map
}

/// A NATS header map as our headers (the last value of each name).
pub(crate) fn from_header_map(map: Option<&HeaderMap>) -> Headers {
    let mut headers = Headers::new();
    for (name, values) in map.into_iter().flat_map(HeaderMap::iter) {
        if let Some(value) = values.last() {
            headers.insert(name.to_string(), value.as_str().to_string());
        }
    }
    headers
}

fn from_nats(msg: async_nats::Message) -> Message {
    Message {
        subject: msg.subject.to_string(),
        reply: msg.reply.map(|r| r.to_string()),
        headers: from_header_map(msg.headers.as_ref()),
        payload: msg.payload,
    }
}

fn check_subject(subject: &str) -> Result<(), BusError> {
    if is_publishable(subject) {
        Ok(())
    } else {
        Err(BusError::InvalidSubject(subject.to_string()))
    }
}

fn check_pattern(pattern: &str) -> Result<(), BusError> {
    if is_valid_pattern(pattern) {
        Ok(())
    } else {
        Err(BusError::InvalidSubject(pattern.to_string()))
    }
}

fn connection(e: impl std::fmt::Display) -> BusError {
    BusError::Connection(e.to_string())
}

#[async_trait]
impl Bus for NatsBus {
    fn max_payload(&self) -> Option<usize> {
        Some(self.client.server_info().max_payload)
    }

    async fn publish(&self, msg: Message) -> Result<(), BusError> {
        check_subject(&msg.subject)?;
        let headers = to_header_map(&msg.headers);
        match msg.reply {
            Some(reply) => {
                check_subject(&reply)?;
                self.client
                    .publish_with_reply_and_headers(msg.subject, reply, headers, msg.payload)
                    .await
            }
            None => {
                self.client
                    .publish_with_headers(msg.subject, headers, msg.payload)
                    .await
            }
        }
        .map_err(connection)
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        check_pattern(pattern)?;
        let sub = self
            .client
            .subscribe(pattern.to_string())
            .await
            .map_err(connection)?;
        Ok(Subscription::new(sub.map(from_nats).boxed()))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        check_pattern(pattern)?;
        if group.is_empty() || group.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(BusError::InvalidSubject(group.to_string()));
        }
        let sub = self
            .client
            .queue_subscribe(pattern.to_string(), group.to_string())
            .await
            .map_err(connection)?;
        Ok(Subscription::new(sub.map(from_nats).boxed()))
    }

    async fn request(&self, msg: Message, timeout: Duration) -> Result<Message, BusError> {
        check_subject(&msg.subject)?;
        let request = async_nats::Request::new()
            .payload(msg.payload)
            .headers(to_header_map(&msg.headers))
            .timeout(Some(timeout));
        let subject = msg.subject;
        match self.client.send_request(subject.clone(), request).await {
            Ok(reply) => Ok(from_nats(reply)),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders(subject),
                RequestErrorKind::TimedOut => match self.refused(&subject) {
                    Some(message) => BusError::PermissionDenied { subject, message },
                    None => BusError::Timeout { subject, timeout },
                },
                RequestErrorKind::Other => connection(e),
            }),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(connection)
    }

    fn unavailable(&self) -> Option<String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => None,
            state => Some(format!("the NATS connection is {state}; reconnecting")),
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::{credentials, redacted, Credentials};

    #[test]
    fn credentials_come_from_the_url_decoded() {
        assert_eq!(
            credentials("nats://al%40ce:p%3Ass@127.0.0.1:4222"),
            Some(Credentials::UserAndPassword("al@ce".into(), "p:ss".into()))
        );
        assert_eq!(
            credentials("nats://h1:1,nats://t0k@h2:2"),
            Some(Credentials::Token("t0k".into()))
        );
        assert_eq!(credentials("nats://127.0.0.1:4222"), None);
    }

    #[test]
    fn passwords_and_tokens_are_never_shown() {
        assert_eq!(
            redacted("nats://alice:s3cret@127.0.0.1:4222"),
            "nats://alice:***@127.0.0.1:4222"
        );
        assert_eq!(redacted("nats://tok3n@h:1"), "nats://***@h:1");
        assert_eq!(
            redacted("nats://a:p@h1:1,nats://h2:2"),
            "nats://a:***@h1:1,nats://h2:2"
        );
        assert_eq!(redacted("127.0.0.1:4222"), "127.0.0.1:4222");
    }
}
