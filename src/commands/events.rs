//! `flotilla events`: envelopes as JSON lines, from the log or from a
//! running gateway (the embedded log is locked by the process that runs it).

use crate::backend::open_log;
use crate::cli::EventsArgs;
use crate::commands::block_on;
use crate::config::resolve_reader;
use anyhow::{anyhow, Context, Result};
use flotilla_messages::StreamName;
use futures::TryStreamExt;
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// Runs `flotilla events`.
pub fn run(args: EventsArgs) -> Result<ExitCode> {
    if let Some(stream) = &args.stream {
        stream
            .parse::<StreamName>()
            .map_err(|e| anyhow!("stream: {e}"))?;
    }
    match &args.http {
        Some(url) => from_http(url, &args),
        None => from_log(&args),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` (an envelope) if `--principal` does not leave it out.
fn print_line(args: &EventsArgs, value: &impl serde::Serialize) -> Result<()> {
    // Only a filter needs the envelope as a value; a whole dump writes it as is.
    if let Some(wanted) = &args.principal {
        if serde_json::to_value(value)?["principal"].as_str() != Some(wanted.as_str()) {
            return Ok(());
        }
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn from_log(args: &EventsArgs) -> Result<()> {
    let (backend, subjects) = resolve_reader(&args.source)?;
    block_on(async {
        let log = open_log(
            &backend,
            &subjects,
            crate::signing::reader_keys(&backend, None)?,
        )
        .await?;
        match (&args.stream, args.follow) {
            (Some(stream), false) => {
                let mut events = log.read_stream(stream, args.from).await?;
                while let Some(env) = events.try_next().await? {
                    print_line(args, &env)?;
                }
            }
            (only, follow) => {
                let from = if only.is_some() { 1 } else { args.from };
                let mut events = log.read_all(from, follow).await?;
                while let Some(p) = events.try_next().await? {
                    let wanted = only
                        .as_ref()
                        .is_none_or(|s| &p.envelope.stream == s && p.envelope.seq >= args.from);
                    if wanted {
                        print_line(args, &p.envelope)?;
                    }
                }
            }
        }
        Ok(())
    })
}

fn from_http(url: &str, args: &EventsArgs) -> Result<()> {
    let mut query = vec![("follow", args.follow.to_string())];
    if let Some(s) = &args.stream {
        query.push(("stream", s.clone()));
    } else {
        query.push(("from", args.from.to_string()));
    }
    let endpoint = format!("{}/v1/events", url.trim_end_matches('/'));
    let resp = crate::http_auth::client(None)?
        .get(&endpoint)
        .query(&query)
        .send()
        .with_context(|| format!("cannot reach {endpoint}"))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{endpoint}: HTTP {}",
        resp.status()
    );
    for line in std::io::BufReader::new(resp).lines() {
        let line = line?;
        let value: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(stream) = &args.stream {
            if value["seq"].as_u64().unwrap_or(0) < args.from || value["stream"] != *stream {
                continue;
            }
        }
        print_line(args, &value)?;
    }
    Ok(())
}
