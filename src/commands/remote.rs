//! A running control plane as the CLI's commands that follow it see it
//! (`run --remote`/`--nats`, `study watch|stop|pause|resume`): commands and
//! queries to one aggregate, over the gateway (with `FLOTILLA_TOKEN`, like
//! `send --http`) or straight on NATS (signed with the connection's nkey,
//! like `send --nats`). Async, so that the caller can wait for Ctrl-C
//! while a request is out.
//!
//! Where the endpoint comes from is [`endpoint`], shared with `send`.

use crate::cli::NatsAuthArgs;
use anyhow::{anyhow, Context, Result};
use flotilla_bus::nats::{redacted, NatsBus};
use flotilla_bus::{Bus, Message};
use flotilla_messages::auth::CommandSigner;
use flotilla_messages::{Actor, Encoding, Reply, StreamName, Subjects};
use serde_json::Value;
use std::time::Duration;

/// The gateway `flotilla up` serves by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a control plane is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its gateway's base URL.
    Http(String),
    /// Its NATS server's URL.
    Nats(String),
}

/// Flags first (`--http`, `--nats`), then `FLOTILLA_NATS`, then
/// `FLOTILLA_URL`, then the default gateway.
pub fn endpoint(http: Option<&String>, nats: Option<&String>) -> Endpoint {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (http, nats, var("FLOTILLA_NATS")) {
        (Some(url), _, _) => Endpoint::Http(url.clone()),
        (None, Some(url), _) => Endpoint::Nats(url.clone()),
        (None, None, Some(url)) => Endpoint::Nats(url),
        (None, None, None) => {
            Endpoint::Http(var("FLOTILLA_URL").unwrap_or_else(|| DEFAULT_URL.to_string()))
        }
    }
}

/// A connection to a running control plane.
pub struct ControlPlane {
    link: Link,
    /// The endpoint as messages show it (credentials in a URL redacted).
    shown: String,
    /// The flags that reach it again (`--http URL`, `--nats URL`).
    flags: String,
}

enum Link {
    Http {
        base: String,
        client: reqwest::Client,
    },
    Nats {
        bus: NatsBus,
        subjects: Subjects,
        // Boxed: a signer's keys are much larger than the other variant.
        signer: Option<Box<CommandSigner>>,
    },
}

impl ControlPlane {
    /// Connects to `endpoint` (NATS: with `nats_auth`, subjects under
    /// `prefix`; HTTP: nothing is sent yet).
    pub async fn connect(
        endpoint: &Endpoint,
        nats_auth: &NatsAuthArgs,
        prefix: &str,
    ) -> Result<ControlPlane> {
        match endpoint {
            Endpoint::Http(url) => {
                let base = url.trim_end_matches('/').to_string();
                anyhow::ensure!(
                    base.starts_with("http://") || base.starts_with("https://"),
                    "http: {url:?} is not an http:// or https:// URL"
                );
                Ok(ControlPlane {
                    shown: redacted(&base),
                    flags: format!("--http {}", redacted(&base)),
                    link: Link::Http {
                        client: crate::http_auth::async_client(Some(REQUEST_TIMEOUT))?,
                        base,
                    },
                })
            }
            Endpoint::Nats(url) => {
                let target = crate::config::nats_target(url, nats_auth)?;
                let subjects = Subjects::new(prefix).map_err(|e| anyhow!("prefix: {e}"))?;
                let signer = crate::commands::send::signer(&target)?.map(Box::new);
                let bus = crate::backend::connect_nats(&target).await?;
                let mut flags = format!("--nats {}", redacted(url));
                if prefix != Subjects::default().prefix() {
                    flags.push_str(&format!(" --prefix {prefix}"));
                }
                Ok(ControlPlane {
                    shown: redacted(url),
                    flags,
                    link: Link::Nats {
                        bus,
                        subjects,
                        signer,
                    },
                })
            }
        }
    }

    /// The endpoint, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The flags that reach this control plane again.
    pub fn flags(&self) -> &str {
        &self.flags
    }

    /// Sends `command` (a map with `type`) to `<actor>/<id>`; the reply,
    /// accepted or refused. An error is a failure to get one.
    pub async fn command(&self, actor: Actor, id: &str, command: &Value) -> Result<Reply> {
        let stream = StreamName::new(actor, id).map_err(|e| anyhow!("study: {e}"))?;
        match &self.link {
            Link::Http { base, client } => {
                let url = format!("{base}/v1/cmd/{actor}/{id}");
                http_reply(client.post(&url).json(command), &url).await
            }
            Link::Nats {
                bus,
                subjects,
                signer,
            } => {
                let msg = Message::new(subjects.command(&stream), serde_json::to_vec(command)?)
                    .with_header("Content-Type", Encoding::Json.content_type());
                let msg = match signer {
                    Some(signer) => msg.signed_by(signer, None),
                    None => msg,
                };
                nats_reply(bus, msg).await
            }
        }
    }

    /// The current state of `<actor>/<id>` (a `NOT_FOUND` reply when it
    /// does not exist).
    pub async fn query(&self, actor: Actor, id: &str) -> Result<Reply> {
        self.query_page(actor, id, None).await
    }

    /// The state of `<actor>/<id>` with at most `limit` items of its long
    /// list (a run's trials, a queue's jobs); the rest of the view is whole.
    pub async fn query_page(&self, actor: Actor, id: &str, limit: Option<usize>) -> Result<Reply> {
        let stream = StreamName::new(actor, id).map_err(|e| anyhow!("study: {e}"))?;
        match &self.link {
            Link::Http { base, client } => {
                let page = limit.map_or(String::new(), |n| format!("?limit={n}"));
                let url = format!("{base}/v1/query/{actor}/{id}{page}");
                http_reply(client.get(&url), &url).await
            }
            Link::Nats { bus, subjects, .. } => {
                let body = serde_json::to_vec(&serde_json::json!({ "limit": limit }))?;
                let msg = Message::new(subjects.query(&stream), body)
                    .with_header("Content-Type", Encoding::Json.content_type());
                nats_reply(bus, msg).await
            }
        }
    }
}

async fn http_reply(request: reqwest::RequestBuilder, url: &str) -> Result<Reply> {
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", redacted(url)))?;
    let status = response.status();
    let body = response.bytes().await?;
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "unexpected reply (HTTP {status}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

async fn nats_reply(bus: &NatsBus, msg: Message) -> Result<Reply> {
    let subject = msg.subject.clone();
    let reply = bus
        .request(msg, REQUEST_TIMEOUT)
        .await
        .with_context(|| format!("nats: no reply on {subject}"))?;
    Encoding::sniff(&reply.payload)
        .decode::<Reply>(&reply.payload)
        .map_err(|e| anyhow!("unexpected reply on {subject}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment() {
        let http = "http://h:1".to_string();
        let nats = "nats://n:2".to_string();
        assert_eq!(
            endpoint(Some(&http), None),
            Endpoint::Http("http://h:1".into())
        );
        assert_eq!(
            endpoint(None, Some(&nats)),
            Endpoint::Nats("nats://n:2".into())
        );
    }
}
