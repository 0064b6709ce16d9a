//! `flotilla send`: one command, one reply, over HTTP (default) or NATS.
//! Exit status: 0 accepted, 1 refused, 2 could not ask.

use crate::cli::SendArgs;
use crate::commands::block_on;
use crate::commands::remote::{endpoint, Endpoint};
use crate::config::NatsTarget;
use anyhow::{anyhow, Context, Result};
use flotilla_bus::{Bus, Message};
use flotilla_messages::auth::CommandSigner;
use flotilla_messages::{validate_id, Actor, Encoding, Reply, StreamName, Subjects};
use std::process::ExitCode;
use std::time::Duration;

/// Runs `flotilla send`.
pub fn run(args: SendArgs) -> Result<ExitCode> {
    let actor: Actor = args.actor.parse().map_err(|e| anyhow!("actor: {e}"))?;
    validate_id("id", &args.id).map_err(|e| anyhow!("id: {e}"))?;
    let stream = StreamName::new(actor, &args.id)?;
    let command: serde_json::Value =
        serde_json::from_str(&args.command).map_err(|e| anyhow!("command: invalid JSON: {e}"))?;
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let body = match endpoint(args.http.as_ref(), args.nats.as_ref()) {
        Endpoint::Nats(url) => {
            let target = crate::config::nats_target(&url, &args.nats_auth)?;
            via_nats(&target, &args, &stream, &command, timeout)?
        }
        Endpoint::Http(url) => via_http(&url, &args, &stream, &command, timeout)?,
    };
    let reply: Reply = serde_json::from_slice(&body)
        .with_context(|| format!("unexpected reply: {}", String::from_utf8_lossy(&body)))?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn via_http(
    base: &str,
    args: &SendArgs,
    stream: &StreamName,
    command: &serde_json::Value,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let url = format!(
        "{}/v1/cmd/{}/{}",
        base.trim_end_matches('/'),
        stream.actor,
        stream.id
    );
    let client = crate::http_auth::client(Some(timeout))?;
    let mut req = client.post(&url).json(command);
    if let Some(key) = &args.id_key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().with_context(|| format!("cannot reach {url}"))?;
    Ok(resp.bytes()?.to_vec())
}

/// `msg` signed with the connection's nkey, if it has one (`--nats-nkey`
/// or `--nats-creds`), so the control plane records the command under the
/// key's name; unsigned otherwise (accepted only where the control plane
/// allows unsigned commands).
fn signed(target: &NatsTarget, msg: Message) -> Result<Message> {
    Ok(match signer(target)? {
        Some(signer) => msg.signed_by(&signer, None),
        None => msg,
    })
}

/// The signer of the connection's nkey (`--nats-nkey` or `--nats-creds`),
/// if it has one.
pub(crate) fn signer(target: &NatsTarget) -> Result<Option<CommandSigner>> {
    let Some(seed) = target.auth.load()?.nkey_seed() else {
        return Ok(None);
    };
    CommandSigner::from_nkey_seed(&seed)
        .map(Some)
        .map_err(|e| anyhow!("nats_nkey: {e}"))
}

fn via_nats(
    target: &NatsTarget,
    args: &SendArgs,
    stream: &StreamName,
    command: &serde_json::Value,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let subjects = Subjects::new(&args.prefix).map_err(|e| anyhow!("prefix: {e}"))?;
    block_on(async {
        let bus = crate::backend::connect_nats(target).await?;
        let mut msg = Message::new(subjects.command(stream), serde_json::to_vec(command)?)
            .with_header("Content-Type", Encoding::Json.content_type());
        if let Some(key) = &args.id_key {
            msg = msg.with_header("Nats-Msg-Id", key.clone());
        }
        let msg = signed(target, msg)?;
        let reply = bus.request(msg, timeout).await?;
        Ok(reply.payload.to_vec())
    })
}
