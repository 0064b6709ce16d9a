//! `flotilla replay`: an aggregate's state as it was at a seq or a time.

use crate::backend::open_log;
use crate::cli::ReplayArgs;
use crate::commands::block_on;
use crate::config::resolve_reader;
use anyhow::{anyhow, Result};
use flotilla_bus::EventLog;
use flotilla_gateway::replay::{ReplayError, StateAt};
use flotilla_host::{replay, Aggregate, Until};
use flotilla_inference::ModelDeployment;
use flotilla_messages::{Actor, StreamName};
use flotilla_provisioner::Pool;
use flotilla_runner::StudyRun;
use flotilla_scheduler::Queue;
use flotilla_solver::Study;
use futures::future::BoxFuture;
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;

/// The state of stream `name` (an `A` aggregate) at `until`, as its query
/// shows it.
async fn replay_view<A: Aggregate>(
    log: &dyn EventLog,
    name: &str,
    until: Until,
) -> Result<serde_json::Value, ReplayError> {
    let r = replay::<A>(log, name, until).await?;
    if r.seq == 0 {
        return Err(ReplayError::NoEvents(name.to_string()));
    }
    Ok(json!({"stream": name, "seq": r.seq, "at": r.at, "state": r.state.view()}))
}

/// The state of `stream` at `until`, folded by its actor's aggregate: what
/// `flotilla replay` prints and the gateway's `/v1/replay` answers.
pub async fn state_at(
    log: &dyn EventLog,
    stream: &StreamName,
    until: Until,
) -> Result<serde_json::Value, ReplayError> {
    let name = stream.to_string();
    match stream.actor {
        Actor::Solver => replay_view::<Study>(log, &name, until).await,
        Actor::Scheduler => replay_view::<Queue>(log, &name, until).await,
        Actor::Provisioner => replay_view::<Pool>(log, &name, until).await,
        Actor::Inference => replay_view::<ModelDeployment>(log, &name, until).await,
        Actor::StudyRun => replay_view::<StudyRun>(log, &name, until).await,
        Actor::Health => Err(ReplayError::NotReplayable(
            "health agents keep no stream; replay provisioner/<pool>".into(),
        )),
    }
}

/// The gateway's `/v1/replay`, over the log `flotilla up` serves.
pub struct LogReplay(pub Arc<dyn EventLog>);

impl StateAt for LogReplay {
    fn state_at<'a>(
        &'a self,
        stream: &'a StreamName,
        seq: Option<u64>,
    ) -> BoxFuture<'a, Result<serde_json::Value, ReplayError>> {
        let until = seq.map_or(Until::End, Until::Seq);
        Box::pin(state_at(self.0.as_ref(), stream, until))
    }
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
        let view = state_at(log.as_ref(), &stream, until).await?;
        println!("{}", serde_json::to_string_pretty(&view)?);
        Ok(ExitCode::SUCCESS)
    })
}
