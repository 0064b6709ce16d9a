//! `flotilla audit`: reads the whole log in global order, verifying every
//! checksum and every hash-chain link, checks each stream's head, and
//! replays every stream of a known actor through its `evolve`. Prints a JSON
//! summary; exits 1 naming the first bad stream and seq.

use crate::backend::open_log;
use crate::cli::AuditArgs;
use crate::commands::block_on;
use crate::config::resolve_reader;
use anyhow::Result;
use flotilla_bus::{EventLog, LogError};
use flotilla_host::Aggregate;
use flotilla_messages::{Envelope, IntegrityError, StreamName};
use flotilla_solver::Study;
use futures::TryStreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// What the audit saw of one stream.
#[derive(Default)]
struct StreamAudit {
    events: u64,
    last_checksum: String,
    study: Option<Study>,
}

/// Runs `flotilla audit`.
pub fn run(args: AuditArgs) -> Result<ExitCode> {
    let (backend, subjects) = resolve_reader(&args.source)?;
    block_on(async {
        let log = open_log(&backend, &subjects).await?;
        let mut streams = BTreeMap::new();
        let outcome = audit(log.as_ref(), &mut streams).await;
        let events: u64 = streams.values().map(|s| s.events).sum();
        let mut summary =
            json!({"ok": outcome.is_ok(), "streams": streams.len(), "events": events});
        let code = match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let (stream, seq) = location(&e);
                summary["error"] = json!({"stream": stream, "seq": seq, "message": e.to_string()});
                eprintln!("audit failed: {e}");
                ExitCode::from(1)
            }
        };
        println!("{}", serde_json::to_string_pretty(&summary)?);
        Ok(code)
    })
}

fn location(e: &LogError) -> (Option<String>, Option<u64>) {
    match e {
        LogError::Corrupt(i) => {
            let (s, q) = i.location();
            (Some(s.to_string()), Some(q))
        }
        LogError::Conflict { stream, actual, .. } => (Some(stream.clone()), Some(*actual)),
        LogError::BadSnapshot { stream, .. } => (Some(stream.clone()), None),
        _ => (None, None),
    }
}

async fn audit(
    log: &dyn EventLog,
    streams: &mut BTreeMap<String, StreamAudit>,
) -> Result<(), LogError> {
    let mut all = log.read_all(1, false).await?;
    while let Some(p) = all.try_next().await? {
        let entry = streams.entry(p.envelope.stream.clone()).or_default();
        fold(entry, &p.envelope)?;
    }
    for name in log.streams().await? {
        let head = log.head(&name).await?;
        let seen = streams.get(&name);
        let (events, checksum) = seen.map_or((0, ""), |s| (s.events, s.last_checksum.as_str()));
        if head.seq != events || (events > 0 && head.checksum != checksum) {
            return Err(LogError::Corrupt(IntegrityError::Position {
                stream: name.clone(),
                expected: events + 1,
                found_stream: name,
                found: head.seq,
            }));
        }
    }
    Ok(())
}

/// Counts the event and folds it into the stream's aggregate, if its actor is known.
fn fold(entry: &mut StreamAudit, env: &Envelope) -> Result<(), LogError> {
    entry.events += 1;
    entry.last_checksum = env.checksum.clone();
    let actor = env.stream.parse::<StreamName>().map(|s| s.actor).ok();
    if actor == Some(Study::ACTOR) {
        let event = env
            .payload
            .decode::<<Study as Aggregate>::Event>()
            .map_err(|e| {
                LogError::Corrupt(IntegrityError::Unreadable {
                    stream: env.stream.clone(),
                    seq: env.seq,
                    reason: format!("payload does not replay: {e}"),
                })
            })?;
        let study = entry.study.take().unwrap_or_default();
        entry.study = Some(study.evolve(&event));
    }
    Ok(())
}
