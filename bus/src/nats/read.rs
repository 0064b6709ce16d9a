//! Reading the JetStream event log: stored records, the scanner over
//! batched direct gets (no JetStream consumer), batch reassembly and the verifying pumps behind
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
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::{Client, HeaderMap, StatusCode, Subscriber};
use bytes::Bytes;
use flotilla_messages::{Envelope, IntegrityError, StreamName, Subjects, VerifyingKey};
use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

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

/// Binary search (by JetStream sequence, from `lo` up to `hi`) for a record
/// of `subject` whose seq header is `seq`. `None` when not found, e.g.
/// because a tampered stream is out of order; callers then scan from the
/// start. The record found may be one of a batch a writer left unfinished
/// (see [`batch_completes`]).
pub(crate) async fn locate(
    stream: &Stream,
    subject: &str,
    seq: u64,
    mut lo: u64,
    mut hi: u64,
) -> Result<Option<Record>, LogError> {
    lo = lo.max(1);
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

/// Whether the batch of `rec` (whose event seq is `seq`) was published to
/// its end: the records that follow it on `subject` continue it, seq by
/// seq, up to its batch end. A batch's records are contiguous on the
/// subject (each is published expecting its predecessor as the subject's
/// last message), so the first record that does not continue it means the
/// writer stopped: the batch is an orphan, and the batch that replaced it
/// stores the same seqs again after it.
pub(crate) async fn batch_completes(
    stream: &Stream,
    subject: &str,
    rec: &Record,
    seq: u64,
) -> Result<bool, LogError> {
    let end = rec.batch_end().unwrap_or(seq);
    let mut last = (rec.js_seq, seq);
    while last.1 < end {
        let Some(next) = next_for(stream, subject, last.0 + 1).await? else {
            return Ok(false);
        };
        let continues = next.is_record()
            && next.seq_hint() == Some(last.1 + 1)
            && next.batch_end() == rec.batch_end()
            && next.batch_base() == rec.batch_base();
        if !continues {
            return Ok(false);
        }
        last = (next.js_seq, last.1 + 1);
    }
    Ok(true)
}

/// Messages asked for in one batched direct get.
const BATCH: usize = 256;
/// How long each reply of a batched direct get may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a batch whose replies stopped coming is asked for.
const BATCH_ATTEMPTS: u32 = 3;
/// How often an idle follower looks for new messages when no publish was seen.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// How soon a follower looks again when a publish was seen but not yet stored.
const HINT_RETRY: Duration = Duration::from_millis(10);
/// How many quick looks a seen publish is worth.
const HINT_RETRIES: u8 = 3;
/// The status of the reply that ends a batched direct get (`204 EOB`).
const END_OF_BATCH_STATUS: u16 = 204;
/// `Nats-Num-Pending`: how many messages on the filter follow a direct get's reply.
const NUM_PENDING_HEADER: &str = "Nats-Num-Pending";

/// Where `stream`'s direct gets are requested.
pub(crate) fn direct_get_subject(stream: &str) -> String {
    format!("$JS.API.DIRECT.GET.{stream}")
}

/// Reads messages of a subject filter in stream order with batched direct
/// gets (`DIRECT.GET` with `batch`, nats-server 2.11+), so a read holds no
/// JetStream consumer, however many readers there are. A following scanner
/// learns of new messages from a core subscription on the filter (the
/// publishes themselves), with a slow poll as a backstop.
pub(crate) struct Scanner {
    client: Client,
    api: String,
    filter: String,
    next_js: u64,
    follow: bool,
    caught_up: bool,
    ready: VecDeque<Record>,
    replies: Option<(String, Subscriber)>,
    requested: bool,
    hints: Option<Subscriber>,
    quick_looks: u8,
}

impl Scanner {
    /// A scanner over `filter` of the stream whose direct gets are
    /// requested on `api`, from JetStream sequence `start`.
    pub fn new(client: Client, api: String, filter: String, start: u64, follow: bool) -> Self {
        Scanner {
            client,
            api,
            filter,
            next_js: start.max(1),
            follow,
            caught_up: false,
            ready: VecDeque::new(),
            replies: None,
            requested: false,
            hints: None,
            quick_looks: 0,
        }
    }

    /// The next message for the reader at the other end of `reader`:
    /// `None` once caught up, or, when following, once the reader is gone.
    pub async fn next_for<T>(
        &mut self,
        reader: &mpsc::Sender<T>,
    ) -> Result<Option<Record>, LogError> {
        loop {
            if self.ready.is_empty() && !self.caught_up {
                self.fetch().await?;
            }
            if let Some(rec) = self.ready.pop_front() {
                return Ok(Some(rec));
            }
            if !self.follow || reader.is_closed() {
                return Ok(None);
            }
            self.wait_for_more().await?;
        }
    }

    /// Waits until a message may have been stored after the last one read:
    /// a publish on the filter was seen, or [`FOLLOW_POLL`] passed.
    async fn wait_for_more(&mut self) -> Result<(), LogError> {
        let pause = if self.quick_looks > 0 {
            self.quick_looks -= 1;
            HINT_RETRY
        } else {
            FOLLOW_POLL
        };
        let hints = self
            .hints
            .as_mut()
            .expect("a following scanner subscribes first");
        match tokio::time::timeout(pause, hints.next()).await {
            Ok(Some(_)) => {
                // One look covers every publish seen so far.
                while let Some(Some(_)) = hints.next().now_or_never() {}
                self.quick_looks = HINT_RETRIES;
            }
            Ok(None) => return Err(backend("the follow subscription ended")),
            Err(_) => {}
        }
        self.caught_up = false;
        Ok(())
    }

    /// Asks for the next batch and queues what arrives; marks the scanner
    /// caught up when nothing follows it.
    async fn fetch(&mut self) -> Result<(), LogError> {
        if self.follow && self.hints.is_none() {
            // Before the first look, so no publish after it goes unseen.
            let hints = self.client.subscribe(self.filter.clone()).await;
            self.hints = Some(hints.map_err(backend)?);
        }
        for attempt in 1..=BATCH_ATTEMPTS {
            let outcome = self.receive_batch().await;
            if !matches!(outcome, Ok(Some(_))) {
                // Late replies of a failed batch must not reach the next one.
                self.replies = None;
                self.requested = false;
            }
            match outcome? {
                Some(got) => {
                    if got > 0 {
                        self.quick_looks = 0;
                    }
                    return Ok(());
                }
                None => {
                    tracing::warn!(api = %self.api, attempt, "direct get timed out, asking again")
                }
            }
        }
        Err(backend(format!(
            "direct get on {}: no reply after {BATCH_ATTEMPTS} attempts",
            self.api
        )))
    }

    /// Asks for the batch that starts at `next_js`, subscribing to its replies first.
    async fn request(&mut self) -> Result<(), LogError> {
        if self.replies.is_none() {
            let inbox = self.client.new_inbox();
            let sub = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(backend)?;
            self.replies = Some((inbox, sub));
        }
        let inbox = self.replies.as_ref().expect("subscribed").0.clone();
        let request = serde_json::json!({
            "seq": self.next_js,
            "next_by_subj": self.filter,
            "batch": BATCH,
        });
        let body = Bytes::from(serde_json::to_vec(&request).map_err(backend)?);
        self.client
            .publish_with_reply(self.api.clone(), inbox, body)
            .await
            .map_err(backend)?;
        self.requested = true;
        Ok(())
    }

    /// Reads the replies of the batch asked for (asking first if need be); returns how
    /// many messages it queued, or `None` when a reply did not come in time.
    async fn receive_batch(&mut self) -> Result<Option<usize>, LogError> {
        if !self.requested {
            self.request().await?;
        }
        self.requested = false;
        let mut got = 0;
        loop {
            let (_, replies) = self.replies.as_mut().expect("subscribed");
            let Ok(reply) = tokio::time::timeout(REPLY_TIMEOUT, replies.next()).await else {
                return Ok(None);
            };
            let reply = reply.ok_or_else(|| backend("the direct get subscription ended"))?;
            match Reply::of(reply)? {
                Reply::Record(rec, pending) => {
                    self.next_js = rec.js_seq + 1;
                    self.ready.push_back(rec);
                    got += 1;
                    // A server without batches answers with one plain message.
                    if pending.is_none() {
                        return Ok(Some(got));
                    }
                }
                Reply::End { pending } => {
                    self.caught_up = pending == 0;
                    if !self.caught_up {
                        // The server reads the next batch while the reader checks this one.
                        self.request().await?;
                    }
                    return Ok(Some(got));
                }
                Reply::NotFound => {
                    self.caught_up = true;
                    return Ok(Some(got));
                }
            }
        }
    }
}

/// One reply to a batched direct get.
enum Reply {
    /// A stored message, and how many on the filter follow it.
    Record(Record, Option<u64>),
    /// The end of the batch, and how many messages on the filter follow it.
    End { pending: u64 },
    /// No message on the filter at or after the asked sequence.
    NotFound,
}

impl Reply {
    fn of(msg: async_nats::Message) -> Result<Reply, LogError> {
        let pending = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(NUM_PENDING_HEADER))
            .and_then(|v| v.as_str().parse().ok());
        match msg.status {
            None => {
                let rec = StreamMessage::try_from(msg).map_err(backend)?.into();
                Ok(Reply::Record(rec, pending))
            }
            Some(StatusCode::NOT_FOUND) => Ok(Reply::NotFound),
            Some(status) if status.as_u16() == END_OF_BATCH_STATUS => Ok(Reply::End {
                pending: pending.unwrap_or(1),
            }),
            Some(status) => Err(backend(format!(
                "direct get: {status} {}",
                msg.description.unwrap_or_default()
            ))),
        }
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
        while let Some(rec) = scanner.next_for(&tx).await? {
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
    fn new(stream: &str, from_start: bool, key: Option<&VerifyingKey>) -> Self {
        StreamState {
            verifier: from_start
                .then(|| ChainVerifier::new(stream, StreamHead::empty()).with_key(key, false)),
            buffer: BatchBuffer::default(),
        }
    }

    /// Checks `env`; the first event seen when not reading from the start
    /// anchors the chain (its own checksum and signature are still checked).
    fn check(
        &mut self,
        stream: &str,
        env: &Envelope,
        key: Option<&VerifyingKey>,
    ) -> Result<(), IntegrityError> {
        let verifier = self.verifier.get_or_insert_with(|| {
            let anchor = StreamHead {
                seq: env.seq.saturating_sub(1),
                checksum: env.prev_hash.clone(),
            };
            ChainVerifier::new(stream, anchor).with_key(key, false)
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

/// Feeds `read_all`: every verified event in global order (signatures
/// checked against `key` when there is one).
pub(crate) async fn pump_all(
    mut scanner: Scanner,
    subjects: Subjects,
    key: Option<VerifyingKey>,
    from_position: u64,
    mut tx: mpsc::Sender<Result<Positioned, LogError>>,
) {
    let mut states: HashMap<String, StreamState> = HashMap::new();
    let result: Result<(), LogError> = async {
        while let Some(rec) = scanner.next_for(&tx).await? {
            let Some(name) = stream_of(&subjects, &rec.subject).filter(|_| rec.is_record()) else {
                continue;
            };
            let (env, end) = decode(&rec, &name)?;
            let state = states
                .entry(name.clone())
                .or_insert_with(|| StreamState::new(&name, from_position <= 1, key.as_ref()));
            for (position, envelope) in state.buffer.push(rec.js_seq, env, end).unwrap_or_default()
            {
                state.check(&name, &envelope, key.as_ref())?;
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
