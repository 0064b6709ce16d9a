//! `GET /v1/replay/{actor}/{id}?seq=N`: the state of an aggregate as it was
//! after its event `seq` (the latest without `seq`), as its query shows it:
//! `{"ok": true, "stream", "seq", "result": {"stream", "seq", "at", "state"}}`.
//!
//! The gateway knows no aggregate, so the fold is a [`StateAt`] the binary
//! hands in (the same code as `flotilla replay`).

use crate::{error_response, log_error_code, parse_stream, GatewayState};
use actix_web::{web, HttpResponse};
use flotilla_bus::LogError;
use flotilla_messages::{ErrorCode, Rejection, Reply, StreamName};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

/// Folds a stream's events into the state of its aggregate.
pub trait StateAt: Send + Sync {
    /// `{"stream", "seq", "at", "state"}` of `stream` after its event
    /// `seq` (the latest when `None`).
    fn state_at<'a>(
        &'a self,
        stream: &'a StreamName,
        seq: Option<u64>,
    ) -> BoxFuture<'a, Result<Value, ReplayError>>;
}

/// Why a replay gives no state.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The stream has no event.
    #[error("stream: {0} has no events")]
    NoEvents(String),
    /// The actor keeps no stream.
    #[error("stream: {0}")]
    NotReplayable(String),
    /// The log failed or is damaged.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl ReplayError {
    /// The wire error of this failure.
    pub fn rejection(&self) -> Rejection {
        let code = match self {
            ReplayError::NoEvents(_) => ErrorCode::NotFound,
            ReplayError::NotReplayable(_) => ErrorCode::InvalidField,
            ReplayError::Log(e) => log_error_code(e),
        };
        Rejection::new(code, self.to_string())
    }
}

/// Query parameters of the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {
    /// The last event to fold, from 1.
    #[serde(default)]
    seq: Option<u64>,
}

/// `GET /v1/replay/{actor}/{id}?seq=`: the aggregate's state after event `seq`.
pub async fn replay(
    state: web::Data<GatewayState>,
    path: web::Path<(String, String)>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let (actor, id) = path.into_inner();
    match replayed(&state, &actor, &id, req.query_string()).await {
        Ok((stream, view)) => {
            let seq = view["seq"].as_u64().unwrap_or(0);
            HttpResponse::Ok().json(Reply::accepted(stream.to_string(), seq, vec![], view))
        }
        Err(rejection) => error_response(&rejection),
    }
}

/// The view of `actor/id` at the `seq` of `query`, checked: a seq the
/// stream does not reach is `NOT_FOUND`, not the latest state.
async fn replayed(
    state: &GatewayState,
    actor: &str,
    id: &str,
    query: &str,
) -> Result<(StreamName, Value), Rejection> {
    let stream = parse_stream(actor, id)?;
    let seq = web::Query::<ReplayQuery>::from_query(query)
        .map_err(|e| Rejection::invalid(format!("query: {e}")))?
        .into_inner()
        .seq;
    if seq == Some(0) {
        return Err(Rejection::invalid("seq: must be at least 1"));
    }
    let view = state
        .replay
        .state_at(&stream, seq)
        .await
        .map_err(|e| e.rejection())?;
    let last = view["seq"].as_u64().unwrap_or(0);
    match seq {
        Some(n) if n > last => Err(Rejection::new(
            ErrorCode::NotFound,
            format!("seq: {stream} has no event {n} (its last is {last})"),
        )),
        _ => Ok((stream, view)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use flotilla_bus::embedded::SledLog;
    use flotilla_bus::EventLog;
    use futures::TryStreamExt;
    use std::sync::Arc;

    /// Counts a stream's events in the real log: enough to tell a stream
    /// that exists from one that does not (the aggregates live in the binary).
    struct EventCount(Arc<dyn EventLog>);

    impl StateAt for EventCount {
        fn state_at<'a>(
            &'a self,
            stream: &'a StreamName,
            _seq: Option<u64>,
        ) -> BoxFuture<'a, Result<Value, ReplayError>> {
            Box::pin(async move {
                let name = stream.to_string();
                let events: Vec<_> = self.0.read_stream(&name, 1).await?.try_collect().await?;
                match events.last() {
                    None => Err(ReplayError::NoEvents(name)),
                    Some(last) => Ok(serde_json::json!({"stream": name, "seq": last.seq})),
                }
            })
        }
    }

    /// (status, error code) of `GET path` against an empty log.
    async fn refused(path: &str) -> (u16, String) {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(SledLog::open(dir.path()).unwrap());
        let state = GatewayState {
            replay: Arc::new(EventCount(log.clone())),
            log,
            ..crate::testing::state()
        };
        let app = test::init_service(App::new().configure(crate::configure(state))).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = res.status().as_u16();
        let body: Value = test::read_body_json(res).await;
        assert_eq!(body["ok"], false, "{path}: {body}");
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    }

    #[actix_rt::test]
    async fn bad_actors_ids_and_seqs_are_400_with_their_code() {
        for (path, code) in [
            ("/v1/replay/solver/bad.id?seq=1", "INVALID_ID"),
            ("/v1/replay/solver/study1?seq=abc", "INVALID_FIELD"),
            ("/v1/replay/solver/study1?seq=-1", "INVALID_FIELD"),
            ("/v1/replay/solver/study1?seq=0", "INVALID_FIELD"),
            ("/v1/replay/solver/study1?until=3", "INVALID_FIELD"),
        ] {
            assert_eq!(refused(path).await, (400, code.to_string()), "{path}");
        }
    }

    #[actix_rt::test]
    async fn an_unknown_actor_or_a_stream_without_events_is_404() {
        for (path, code) in [
            ("/v1/replay/nobody/study1?seq=1", "UNKNOWN_ACTOR"),
            ("/v1/replay/solver/nothing?seq=1", "NOT_FOUND"),
            ("/v1/replay/scheduler/nothing", "NOT_FOUND"),
        ] {
            assert_eq!(refused(path).await, (404, code.to_string()), "{path}");
        }
    }
}
