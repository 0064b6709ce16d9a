//! `flotilla replay`: an aggregate's state as it was at a seq or a time.

use crate::backend::open_log;
use crate::cli::ReplayArgs;
use crate::commands::block_on;
use crate::config::resolve_reader;
use anyhow::{anyhow, bail, Result};
use flotilla_bus::EventLog;
use flotilla_host::{replay, Aggregate, Until};
use flotilla_inference::ModelDeployment;
use flotilla_messages::{Actor, StreamName};
use flotilla_provisioner::Pool;
use flotilla_runner::StudyRun;
use flotilla_scheduler::Queue;
use flotilla_solver::Study;
use serde_json::json;
use std::process::ExitCode;

/// The state of stream `name` (an `A` aggregate) at `until`, as its query
/// shows it.
async fn state_at<A: Aggregate>(
    log: &dyn EventLog,
    name: &str,
    until: Until,
) -> Result<serde_json::Value> {
    let r = replay::<A>(log, name, until).await?;
    if r.seq == 0 {
        bail!("stream: {name} has no events");
    }
    Ok(json!({"stream": name, "seq": r.seq, "at": r.at, "state": r.state.view()}))
}

/// Runs `flotilla replay`.
pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let stream: StreamName = args.stream.parse().map_err(|e| anyhow!("stream: {e}"))?;
    let until = match (args.until_seq, &args.until_time) {
        (Some(n), _) => Until::Seq(n),
        (None, Some(t)) => Until::Time(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| anyhow!("until-time: {t:?} is not RFC 3339: {e}"))?
                .with_timezone(&chrono::Utc),
        ),
        (None, None) => Until::End,
    };
    let (backend, subjects) = resolve_reader(&args.source)?;
    block_on(async {
        let log = open_log(
            &backend,
            &subjects,
            crate::signing::reader_keys(&backend, None)?,
        )
        .await?;
        let name = stream.to_string();
        let log = log.as_ref();
        let view = match stream.actor {
            Actor::Solver => state_at::<Study>(log, &name, until).await?,
            Actor::Scheduler => state_at::<Queue>(log, &name, until).await?,
            Actor::Provisioner => state_at::<Pool>(log, &name, until).await?,
            Actor::Inference => state_at::<ModelDeployment>(log, &name, until).await?,
            Actor::StudyRun => state_at::<StudyRun>(log, &name, until).await?,
            Actor::Health => {
                bail!("stream: health agents keep no stream; replay provisioner/<pool>")
            }
        };
        println!("{}", serde_json::to_string_pretty(&view)?);
        Ok(ExitCode::SUCCESS)
    })
}
