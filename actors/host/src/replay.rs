//! Folding a stream into state outside the host: for audits, point-in-time
//! replays and checks that a recovered state equals a clean replay.

use crate::Aggregate;
use chrono::{DateTime, Utc};
use flotilla_bus::{EventLog, LogError};
use flotilla_messages::IntegrityError;
use futures::TryStreamExt;

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Until {
    /// The end of the stream.
    #[default]
    End,
    /// After the event with this seq.
    Seq(u64),
    /// After the last event stored at or before this time.
    Time(DateTime<Utc>),
}

/// A replayed aggregate.
#[derive(Debug, Clone)]
pub struct Replayed<A> {
    /// The state.
    pub state: A,
    /// The seq of the last event folded (0 if none).
    pub seq: u64,
    /// When that event was stored.
    pub at: Option<DateTime<Utc>>,
}

/// Replays `stream` from its first event (no snapshot), verifying every
/// checksum and link on the way.
pub async fn replay<A: Aggregate>(
    log: &dyn EventLog,
    stream: &str,
    until: Until,
) -> Result<Replayed<A>, LogError> {
    let mut events = log.read_stream(stream, 1).await?;
    let mut out = Replayed {
        state: A::default(),
        seq: 0,
        at: None,
    };
    while let Some(env) = events.try_next().await? {
        let past = match until {
            Until::End => false,
            Until::Seq(n) => env.seq > n,
            Until::Time(t) => env.at > t,
        };
        if past {
            break;
        }
        let event: A::Event = env.payload.decode().map_err(|e| {
            LogError::Corrupt(IntegrityError::Unreadable {
                stream: stream.to_string(),
                seq: env.seq,
                reason: format!("payload is not a {} event: {e}", A::ACTOR),
            })
        })?;
        out.state = out.state.evolve(&event);
        out.seq = env.seq;
        out.at = Some(env.at);
    }
    Ok(out)
}
