//! Reading the JetStream event log: stored records, the scanner over an
//! ordered consumer, batch reassembly and the verifying pumps behind
//! [`super::JetStreamLog`]'s `read_stream` and `read_all`.
//!
//! A record is a message carrying [`BATCH_END_HEADER`]; anything else that
//! lands on an event subject (a plain core publish of an envelope) is not
//! part of the log and is skipped. A batch is released to the reader only
//! once its last record (seq = batch end) is seen, so a batch cut short by a
//! crash never reaches a reader; every released event is checked by a
//! [`ChainVerifier`].

use super::log::{BATCH_BASE_HEADER, BATCH_END_HEADER, SEQ_HEADER};
use crate::{backend, ChainVerifier, LogError, Positioned, StreamHead};
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use flotilla_messages::{Envelope, IntegrityError, StreamName, Subjects};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::Duration;

/// How long a non-following scan waits before checking it is caught up.
const IDLE_PROBE: Duration = Duration::from_secs(2);

/// One message of the JetStream stream.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Its JetStream sequence (the global position).
    pub js_seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// The JSON envelope.
    pub payload: Bytes,
}

impl From<StreamMessage> for Record {
    fn from(m: StreamMessage) -> Self {
        Record {
            js_seq: m.sequence,
            subject: m.subject.to_string(),
            headers: m.headers,
            payload: m.payload,
        }
    }
}

impl Record {
    fn header_u64(&self, name: &str) -> Option<u64> {
        self.headers.get(name)?.as_str().parse().ok()
    }

    /// Whether the log wrote it (it carries the batch headers).
    pub fn is_record(&self) -> bool {
        self.headers.get(BATCH_END_HEADER).is_some()
    }

    /// The seq of its batch's last event.
    pub fn batch_end(&self) -> Option<u64> {
        self.header_u64(BATCH_END_HEADER)
    }

    /// The JetStream sequence of the subject's last message before its batch.
    pub fn batch_base(&self) -> Option<u64> {
        self.header_u64(BATCH_BASE_HEADER)
    }

    /// The event seq, from the header (cheap, used only to search).
    pub fn seq_hint(&self) -> Option<u64> {
        self.header_u64(SEQ_HEADER)
    }

    /// Decodes the envelope; an undecodable body is an integrity error.
    pub fn envelope(&self, stream: &str) -> Result<Envelope, IntegrityError> {
        serde_json::from_slice(&self.payload).map_err(|e| IntegrityError::Unreadable {
            stream: stream.to_string(),
            seq: self.seq_hint().unwrap_or(0),
            reason: e.to_string(),
        })
    }

    /// Whether this record is in a batch that does not end with it.
    pub fn ends_before_batch(&self, seq: u64) -> bool {
        self.batch_end().is_some_and(|end| end > seq)
    }
}

/// The first message on `filter` at or after JetStream sequence `from`.
pub(crate) async fn next_for(
    stream: &Stream,
    filter: &str,
    from: u64,
) -> Result<Option<Record>, LogError> {
    match stream
        .direct_get_next_for_subject(filter, Some(from.max(1)))
        .await
    {
        Ok(m) => Ok(Some(
            StreamMessage::try_from(m.message).map_err(backend)?.into(),
        )),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

/// The message at JetStream sequence `js_seq`, if it still exists.
pub(crate) async fn at(stream: &Stream, js_seq: u64) -> Result<Option<Record>, LogError> {
    match stream.direct_get(js_seq).await {
        Ok(m) => Ok(Some(m.into())),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

/// The last message on `subject`.
pub(crate) async fn last_for(stream: &Stream, subject: &str) -> Result<Option<Record>, LogError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(m.into())),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

/// The last record (a message carrying the batch headers) of `subject`
/// with a JetStream sequence below `before`. Scans back in growing windows,
/// so stray messages cost a little and a clean tail costs nothing.
pub(crate) async fn last_record_before(
    stream: &Stream,
    subject: &str,
    before: u64,
) -> Result<Option<Record>, LogError> {
    let mut window = 16u64;
    loop {
        let from = before.saturating_sub(window).max(1);
        let mut found = None;
        let mut cursor = from;
        while let Some(rec) = next_for(stream, subject, cursor).await? {
            if rec.js_seq >= before {
                break;
            }
            cursor = rec.js_seq + 1;
            if rec.is_record() {
                found = Some(rec);
            }
        }
        if found.is_some() || from == 1 {
            return Ok(found);
        }
        window = window.saturating_mul(4);
    }
}

/// Binary search (by JetStream sequence, up to `hi`) for the record of
/// `subject` whose seq header is `seq`. `None` when not found, e.g. because
/// a tampered stream is out of order; callers then scan from the start.
pub(crate) async fn locate(
    stream: &Stream,
    subject: &str,
    seq: u64,
    mut hi: u64,
) -> Result<Option<Record>, LogError> {
    let mut lo = 1;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let Some(rec) = next_for(stream, subject, mid).await? else {
            hi = mid - 1;
            continue;
        };
        match rec.seq_hint() {
            Some(s) if s == seq && rec.is_record() => return Ok(Some(rec)),
            Some(s) if s <= seq => lo = rec.js_seq + 1,
            Some(_) => hi = mid - 1,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Whether `filter` has a message at or after `from`.
async fn has_more(stream: &Stream, filter: &str, from: u64) -> Result<bool, LogError> {
    Ok(next_for(stream, filter, from).await?.is_some())
}

/// Reads messages of a subject filter in stream order from an ordered
/// consumer; without `follow` it ends once caught up.
pub(crate) struct Scanner {
    stream: Stream,
    filter: String,
    next_js: u64,
    follow: bool,
    done: bool,
    messages: Option<Ordered>,
}

impl Scanner {
    /// A scanner over `filter` from JetStream sequence `start`.
    pub fn new(stream: Stream, filter: String, start: u64, follow: bool) -> Self {
        Scanner {
            stream,
            filter,
            next_js: start.max(1),
            follow,
            done: false,
            messages: None,
        }
    }

    /// The next message, or `None` once caught up (never when following).
    pub async fn next(&mut self) -> Result<Option<Record>, LogError> {
        if self.done {
            return Ok(None);
        }
        if self.messages.is_none() {
            if !self.follow && !has_more(&self.stream, &self.filter, self.next_js).await? {
                self.done = true;
                return Ok(None);
            }
            let open = Self::open(self.stream.clone(), self.filter.clone(), self.next_js);
            self.messages = Some(open.await?);
        }
        self.receive().await
    }

    async fn open(stream: Stream, filter: String, start: u64) -> Result<Ordered, LogError> {
        let config = OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.map_err(backend)?;
        consumer.messages().await.map_err(backend)
    }

    async fn receive(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            let messages = self.messages.as_mut().expect("opened");
            let next = if self.follow {
                messages.next().await
            } else {
                match tokio::time::timeout(IDLE_PROBE, messages.next()).await {
                    Ok(next) => next,
                    Err(_) if has_more(&self.stream, &self.filter, self.next_js).await? => continue,
                    Err(_) => {
                        self.done = true;
                        return Ok(None);
                    }
                }
            };
            let msg = next
                .ok_or_else(|| backend("JetStream consumer ended"))?
                .map_err(backend)?;
            return Ok(Some(self.record(msg)?));
        }
    }

    fn record(&mut self, msg: async_nats::jetstream::Message) -> Result<Record, LogError> {
        let info = msg.info().map_err(|e| backend(e.to_string()))?;
        let (js_seq, pending) = (info.stream_sequence, info.pending);
        self.next_js = js_seq + 1;
        if !self.follow && pending == 0 {
            self.done = true;
        }
        let m = msg.message;
        Ok(Record {
            js_seq,
            subject: m.subject.to_string(),
            headers: m.headers.unwrap_or_default(),
            payload: m.payload,
        })
    }
}

/// Holds a stream's records until their batch is complete.
#[derive(Default)]
pub(crate) struct BatchBuffer {
    items: Vec<(u64, Envelope)>,
    end: u64,
}

impl BatchBuffer {
    /// Adds a record; returns the whole batch once `env` completes it. A
    /// record that does not continue the held batch discards it (the held
    /// records were a crashed writer's orphans).
    pub fn push(&mut self, js_seq: u64, env: Envelope, end: u64) -> Option<Vec<(u64, Envelope)>> {
        if let Some((_, last)) = self.items.last() {
            if env.seq != last.seq + 1 || end != self.end {
                tracing::warn!(stream = %env.stream, seq = last.seq, "skipping an incomplete batch");
                self.items.clear();
            }
        }
        self.end = end;
        let complete = env.seq >= end;
        self.items.push((js_seq, env));
        complete.then(|| std::mem::take(&mut self.items))
    }
}

/// The envelope of a record and its batch end.
fn decode(rec: &Record, stream: &str) -> Result<(Envelope, u64), LogError> {
    let env = rec.envelope(stream)?;
    let end = rec.batch_end().unwrap_or(env.seq);
    Ok((env, end))
}

/// Feeds `read_stream`: verified events of one stream with seq ≥ `from_seq`.
pub(crate) async fn pump_stream(
    mut scanner: Scanner,
    stream: String,
    mut verifier: ChainVerifier,
    from_seq: u64,
    mut tx: mpsc::Sender<Result<Envelope, LogError>>,
) {
    let mut buffer = BatchBuffer::default();
    let result: Result<(), LogError> = async {
        while let Some(rec) = scanner.next().await? {
            if !rec.is_record() {
                continue;
            }
            let (env, end) = decode(&rec, &stream)?;
            for (_, env) in buffer.push(rec.js_seq, env, end).unwrap_or_default() {
                verifier.check(&env)?;
                if env.seq >= from_seq && tx.send(Ok(env)).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}

/// One stream's state while reading the whole log.
struct StreamState {
    verifier: Option<ChainVerifier>,
    buffer: BatchBuffer,
}

impl StreamState {
    fn new(stream: &str, from_start: bool) -> Self {
        StreamState {
            verifier: from_start.then(|| ChainVerifier::new(stream, StreamHead::empty())),
            buffer: BatchBuffer::default(),
        }
    }

    /// Checks `env`; the first event seen when not reading from the start
    /// anchors the chain (its own checksum is still checked).
    fn check(&mut self, stream: &str, env: &Envelope) -> Result<(), IntegrityError> {
        let verifier = self.verifier.get_or_insert_with(|| {
            let anchor = StreamHead {
                seq: env.seq.saturating_sub(1),
                checksum: env.prev_hash.clone(),
            };
            ChainVerifier::new(stream, anchor)
        });
        verifier.check(env)
    }
}

/// The stream name of an event subject, if it is one.
pub(crate) fn stream_of(subjects: &Subjects, subject: &str) -> Option<String> {
    let parsed = subjects.parse(subject)?;
    let name = StreamName::new(parsed.actor.parse().ok()?, parsed.id.as_deref()?).ok()?;
    Some(name.to_string())
}

/// Feeds `read_all`: every verified event in global order.
pub(crate) async fn pump_all(
    mut scanner: Scanner,
    subjects: Subjects,
    from_position: u64,
    mut tx: mpsc::Sender<Result<Positioned, LogError>>,
) {
    let mut states: HashMap<String, StreamState> = HashMap::new();
    let result: Result<(), LogError> = async {
        while let Some(rec) = scanner.next().await? {
            let Some(name) = stream_of(&subjects, &rec.subject).filter(|_| rec.is_record()) else {
                continue;
            };
            let (env, end) = decode(&rec, &name)?;
            let state = states
                .entry(name.clone())
                .or_insert_with(|| StreamState::new(&name, from_position <= 1));
            for (position, envelope) in state.buffer.push(rec.js_seq, env, end).unwrap_or_default()
            {
                state.check(&name, &envelope)?;
                if tx
                    .send(Ok(Positioned { position, envelope }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}
