//! `flotilla audit`: reads the whole log in global order, verifying every
//! checksum and every hash-chain link, checks each stream's head, and
//! replays every stream of a known actor through its `evolve`. With the
//! control plane's public key (`--verify-key`, or the embedded data dir's)
//! it checks every signature too, so a forged event (a bad signature, or an
//! unsigned event after signed ones) is an error. Events removed from the
//! log (a deleted message, a purged subject: gone global positions, which
//! the log never makes itself) are errors too. Prints a JSON summary; exits
//! 1 listing every bad stream and seq (under `errors`). The summary counts
//! events by `principal` (who caused them; `unattributed` for events
//! written before attribution existed).

use crate::backend::open_log;
use crate::cli::AuditArgs;
use crate::commands::block_on;
use crate::config::resolve_reader;
use crate::signing::reader_keys;
use anyhow::Result;
use flotilla_bus::{EventLog, LogError};
use flotilla_host::Aggregate;
use flotilla_messages::{Envelope, IntegrityError, StreamName};
use flotilla_solver::Study;
use futures::TryStreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// The principal counted for events written before attribution existed.
const UNATTRIBUTED: &str = "unattributed";

/// What the audit saw of one stream.
#[derive(Default)]
struct StreamAudit {
    events: u64,
    signed: u64,
    principals: BTreeMap<String, u64>,
    last_checksum: String,
    study: Option<Study>,
}

/// Runs `flotilla audit`.
pub fn run(args: AuditArgs) -> Result<ExitCode> {
    let (backend, subjects) = resolve_reader(&args.source)?;
    block_on(async {
        let keys = reader_keys(&backend, args.verify_key.as_deref())?;
        let checked = keys.verifying().is_some();
        let log = open_log(&backend, &subjects, keys).await?;
        let mut streams = BTreeMap::new();
        let problems = audit(log.as_ref(), &mut streams).await?;
        let events: u64 = streams.values().map(|s| s.events).sum();
        let signed: u64 = streams.values().map(|s| s.signed).sum();
        let mut principals = BTreeMap::<&str, u64>::new();
        for (name, n) in streams.values().flat_map(|s| &s.principals) {
            *principals.entry(name).or_default() += n;
        }
        let mut summary = json!({
            "ok": problems.is_empty(), "streams": streams.len(), "events": events,
            "signed": signed, "unsigned": events - signed, "signatures_checked": checked,
            "principals": principals,
        });
        let errors: Vec<_> = problems.iter().map(describe).collect();
        for e in &problems {
            eprintln!("audit failed: {e}");
        }
        if let Some(first) = errors.first() {
            // `error` (the first) predates `errors` (all); both are kept.
            summary["error"] = first.clone();
            summary["errors"] = json!(errors);
        }
        println!("{}", serde_json::to_string_pretty(&summary)?);
        Ok(if problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

fn describe(e: &LogError) -> serde_json::Value {
    let (stream, seq) = location(e);
    json!({"stream": stream, "seq": seq, "message": e.to_string()})
}

fn location(e: &LogError) -> (Option<String>, Option<u64>) {
    match e {
        LogError::Corrupt(i) => {
            let (s, q) = i.location();
            (Some(s.to_string()), Some(q))
        }
        LogError::Conflict { stream, actual, .. } => (Some(stream.clone()), Some(*actual)),
        LogError::BadSnapshot { stream, .. } => (Some(stream.clone()), None),
        LogError::Removed { first, .. } => (None, Some(*first)),
        _ => (None, None),
    }
}

/// Audits the whole log and returns every problem found, not just the
/// first: the global read stops at a bad record, so after one the streams
/// are read one by one, each up to its own first bad record. An error that
/// is not the log's content (the backend down) ends the audit.
async fn audit(
    log: &dyn EventLog,
    streams: &mut BTreeMap<String, StreamAudit>,
) -> Result<Vec<LogError>, LogError> {
    let mut problems = Vec::new();
    if let Err(global) = read_globally(log, streams).await {
        let global = content_problem(global)?;
        streams.clear();
        for name in log.streams().await? {
            if let Err(e) = read_one(log, &name, streams).await {
                problems.push(content_problem(e)?);
            }
        }
        // A problem of the log as a whole (a truncation, an event out of
        // global order) shows only in the global read.
        if !problems.iter().any(|p| location(p) == location(&global)) {
            problems.insert(0, global);
        }
    }
    let unreadable: Vec<Option<String>> = problems.iter().map(|p| location(p).0).collect();
    for name in log.streams().await? {
        if unreadable.contains(&Some(name.clone())) {
            continue;
        }
        if let Err(e) = check_head(log, &name, streams.get(&name)).await {
            problems.push(content_problem(e)?);
        }
    }
    for gone in log.removed_positions().await? {
        let (first, last) = gone.into_inner();
        problems.push(LogError::Removed { first, last });
    }
    Ok(problems)
}

/// Passes a problem of the log's content through; any other error ends the audit.
fn content_problem(e: LogError) -> Result<LogError, LogError> {
    match e {
        LogError::Backend(_) | LogError::InUse { .. } => Err(e),
        _ => Ok(e),
    }
}

/// Every event in global order, each folded into its stream's audit.
async fn read_globally(
    log: &dyn EventLog,
    streams: &mut BTreeMap<String, StreamAudit>,
) -> Result<(), LogError> {
    let mut all = log.read_all(1, false).await?;
    while let Some(p) = all.try_next().await? {
        let entry = streams.entry(p.envelope.stream.clone()).or_default();
        fold(entry, &p.envelope)?;
    }
    Ok(())
}

/// Every event of stream `name`, folded into its audit.
async fn read_one(
    log: &dyn EventLog,
    name: &str,
    streams: &mut BTreeMap<String, StreamAudit>,
) -> Result<(), LogError> {
    let entry = streams.entry(name.to_string()).or_default();
    let mut events = log.read_stream(name, 1).await?;
    while let Some(env) = events.try_next().await? {
        fold(entry, &env)?;
    }
    Ok(())
}

/// The stream's stored head matches the last event read.
async fn check_head(
    log: &dyn EventLog,
    name: &str,
    seen: Option<&StreamAudit>,
) -> Result<(), LogError> {
    let head = log.head(name).await?;
    let (events, checksum) = seen.map_or((0, ""), |s| (s.events, s.last_checksum.as_str()));
    if head.seq != events || (events > 0 && head.checksum != checksum) {
        return Err(LogError::Corrupt(IntegrityError::Position {
            stream: name.to_string(),
            expected: events + 1,
            found_stream: name.to_string(),
            found: head.seq,
        }));
    }
    Ok(())
}

/// Counts the event and folds it into the stream's aggregate, if its actor is known.
fn fold(entry: &mut StreamAudit, env: &Envelope) -> Result<(), LogError> {
    entry.events += 1;
    entry.signed += u64::from(env.signature.is_some());
    let principal = env.principal.as_deref().unwrap_or(UNATTRIBUTED);
    match entry.principals.get_mut(principal) {
        Some(n) => *n += 1,
        None => {
            entry.principals.insert(principal.to_string(), 1);
        }
    }
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
