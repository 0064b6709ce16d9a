//! [`JetStreamLog`]: the event log as the JetStream stream [`STREAM_NAME`]
//! over `<prefix>.evt.>`, with snapshots in the KV bucket [`SNAPSHOT_BUCKET`].
//!
//! Each envelope is one message on `<prefix>.evt.<actor>.<id>` whose body is
//! the JSON envelope and whose `Nats-Msg-Id` is the envelope id, so a
//! retried publish is dropped by JetStream's duplicate window. Appends are
//! guarded by `Nats-Expected-Last-Subject-Sequence`: the first message of a
//! batch expects the subject's last message, each later one its
//! predecessor's ack. Every record carries [`BATCH_END_HEADER`] (the seq of
//! its batch's last event), [`BATCH_BASE_HEADER`] (the JetStream sequence of
//! the subject's last message before the batch) and [`SEQ_HEADER`]; readers
//! in `super::read` only release complete batches. A batch a writer left
//! incomplete (killed, or beaten by another host of the aggregate) stays
//! as an orphan, never deleted: the next append steps over it and stores
//! the same seqs again after it, so a seq may be carried by an orphan
//! record before its committed one, and every lookup by seq must skip
//! orphans. Concurrent writers are safe: the expected-sequence header makes
//! all but one fail, and the losers see a conflict.

use super::read::{self, last_for, locate, pump_all, pump_stream, Record, Scanner};
use super::snapshots::{SnapshotStore, SNAPSHOT_BUCKET};
use crate::{
    backend, seal_batch, ChainVerifier, CheckedBatch, EventLog, EventStream, LogError, LogKeys,
    PositionedStream, Snapshot, StreamHead,
};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::kv;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{Config, StorageType, Stream};
use async_nats::{jetstream, Client, HeaderMap};
use async_trait::async_trait;
use bytes::Bytes;
use flotilla_messages::{Envelope, IntegrityError, StreamName, Subjects};
use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::time::Duration;

/// The JetStream stream that holds every event.
pub const STREAM_NAME: &str = "FLOTILLA_EVENTS";
/// Header: the seq of the last event of the record's batch.
pub const BATCH_END_HEADER: &str = "Flotilla-Batch-End";
/// Header: the JetStream sequence of the subject's last message before the batch (0 if none).
pub const BATCH_BASE_HEADER: &str = "Flotilla-Batch-Base";
/// Header: the record's event seq.
pub const SEQ_HEADER: &str = "Flotilla-Seq";
/// JetStream's duplicate window for `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a JetStream API call or publish ack may take.
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// How many incomplete batches `tail` steps over before giving up.
const MAX_TAIL_STEPS: usize = 64;
/// Publish attempts (same message) when an ack times out.
const PUBLISH_ATTEMPTS: u32 = 5;
/// Reader channel capacity.
const READ_BUFFER: usize = 512;

/// An [`EventLog`] on JetStream; cloning shares the connection.
#[derive(Clone, Debug)]
pub struct JetStreamLog {
    client: Client,
    js: jetstream::Context,
    stream: Stream,
    snapshots: SnapshotStore,
    subjects: Subjects,
    keys: LogKeys,
}

/// A subject's last complete event and the JetStream sequence to expect.
struct Tail {
    head: StreamHead,
    last_js: u64,
}

/// Why publishing a batch stopped.
enum PublishFail {
    /// Another message got in first (`Nats-Expected-Last-Subject-Sequence`).
    WrongLast,
    /// Anything else.
    Other(LogError),
}

impl JetStreamLog {
    /// Gets or creates the stream [`STREAM_NAME`] over `<prefix>.evt.>`
    /// (file storage, `replicas` copies, direct gets, a 2-minute duplicate
    /// window) and the KV bucket [`SNAPSHOT_BUCKET`].
    ///
    /// An existing stream is used as it is, whatever its configuration.
    pub async fn open(
        client: Client,
        subjects: Subjects,
        replicas: usize,
    ) -> Result<JetStreamLog, LogError> {
        let max_payload = client.server_info().max_payload;
        let mut js = jetstream::new(client.clone());
        // A publish lost in a server restart is retried (deduplicated) after
        // this long; JetStream's default of 5 s stalls the aggregate for that.
        js.set_timeout(API_TIMEOUT);
        let stream = js
            .get_or_create_stream(stream_config(&subjects, replicas))
            .await
            .map_err(backend)?;
        let kv = open_bucket(&js, replicas).await?;
        Ok(JetStreamLog {
            client,
            js,
            stream,
            snapshots: SnapshotStore::new(kv, max_payload),
            subjects,
            keys: LogKeys::default(),
        })
    }

    /// Signs appends and checks reads with `keys`.
    pub fn with_keys(mut self, keys: LogKeys) -> Self {
        self.keys = keys;
        self
    }

    /// The subjects this log stores under.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The JetStream context the log uses (its connection and API timeout),
    /// for stores beside it such as [`super::NatsLeases`].
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The JetStream stream handle (for operators and tests).
    pub fn jetstream_stream(&self) -> &Stream {
        &self.stream
    }

    /// The JetStream sequence of the record of (`stream`, `seq`), if found.
    pub async fn position_of(&self, stream: &str, seq: u64) -> Result<Option<u64>, LogError> {
        let subject = self.subject_of(stream)?;
        let Some(last) = last_for(&self.stream, &subject).await? else {
            return Ok(None);
        };
        let found = self.committed_record(&subject, seq, last.js_seq).await?;
        Ok(found.map(|r| r.js_seq))
    }

    /// The committed record of `seq` on `subject` (up to JetStream sequence
    /// `last_js`). A record of a batch its writer never finished carries the
    /// seq too, before the committed one: the search steps over it and goes
    /// on after it.
    async fn committed_record(
        &self,
        subject: &str,
        seq: u64,
        last_js: u64,
    ) -> Result<Option<Record>, LogError> {
        let mut from = 1;
        for _ in 0..MAX_TAIL_STEPS {
            let Some(rec) = locate(&self.stream, subject, seq, from, last_js).await? else {
                return Ok(None);
            };
            if read::batch_completes(&self.stream, subject, &rec, seq).await? {
                return Ok(Some(rec));
            }
            from = rec.js_seq + 1;
        }
        Ok(None)
    }

    /// A scanner of `filter` from JetStream sequence `start`.
    fn scanner(&self, filter: String, start: u64, follow: bool) -> Scanner {
        let api = read::direct_get_subject(&self.stream.cached_info().config.name);
        Scanner::new(self.client.clone(), api, filter, start, follow)
    }

    fn subject_of(&self, stream: &str) -> Result<String, LogError> {
        let name: StreamName =
            stream
                .parse()
                .map_err(|e: flotilla_messages::subjects::BadStreamName| {
                    LogError::Invalid(e.to_string())
                })?;
        Ok(self.subjects.event(&name))
    }

    /// The subject's tail: its last committed event and the JetStream
    /// sequence of its last message (what the next append must expect).
    ///
    /// Nothing is ever deleted here. Messages that are not records (a stray
    /// publish on the subject) are stepped over, and so is a trailing batch
    /// that a crashed writer left incomplete (or that another writer is still
    /// publishing): readers skip such records too, so the log's meaning never
    /// depends on headers alone, and a forged header can at worst make an
    /// append conflict — loudly — never remove an event.
    async fn tail(&self, stream: &str, subject: &str) -> Result<Tail, LogError> {
        let Some(last) = last_for(&self.stream, subject).await? else {
            return Ok(Tail::empty());
        };
        let last_js = last.js_seq;
        let head = self.committed_head(stream, subject, last).await?;
        Ok(Tail { head, last_js })
    }

    /// The last complete event at or before the message `from`.
    async fn committed_head(
        &self,
        stream: &str,
        subject: &str,
        from: Record,
    ) -> Result<StreamHead, LogError> {
        let mut candidate = Some(from);
        for _ in 0..MAX_TAIL_STEPS {
            let Some(rec) = self.record_at_or_before(subject, candidate.take()).await? else {
                return Ok(StreamHead::empty());
            };
            let env = verified(&rec, stream, &self.keys)?;
            if !rec.ends_before_batch(env.seq) {
                return Ok(StreamHead {
                    seq: env.seq,
                    checksum: env.checksum,
                });
            }
            // An incomplete batch: what was committed ends at or before its base.
            let base = self
                .incomplete_batch_base(stream, subject, &rec, env.seq)
                .await?;
            if base == 0 {
                return Ok(StreamHead::empty());
            }
            candidate = read::at(&self.stream, base).await?;
            if candidate.is_none() {
                candidate = read::last_record_before(&self.stream, subject, base + 1).await?;
            }
        }
        Err(backend(format!(
            "stream {stream}: more than {MAX_TAIL_STEPS} incomplete batches at its end"
        )))
    }

    /// The base of the incomplete batch `rec` belongs to, after checking
    /// that the batch really starts right after it (a genuine batch was
    /// published expecting its base as the subject's last message). Headers
    /// that do not hold together are forged: a clear error, never a guess.
    async fn incomplete_batch_base(
        &self,
        stream: &str,
        subject: &str,
        rec: &Record,
        seq: u64,
    ) -> Result<u64, LogError> {
        let base = rec.batch_base().unwrap_or(0);
        let first = read::next_for(&self.stream, subject, base + 1).await?;
        let genuine = first.is_some_and(|f| {
            f.is_record() && f.batch_base() == rec.batch_base() && f.batch_end() == rec.batch_end()
        });
        if genuine {
            return Ok(base);
        }
        Err(LogError::Corrupt(IntegrityError::Unreadable {
            stream: stream.to_string(),
            seq,
            reason: format!(
                "message {} claims an unfinished batch that does not start after message {base} (forged headers?)",
                rec.js_seq
            ),
        }))
    }

    /// `rec` if it is a record, else the last record before it.
    async fn record_at_or_before(
        &self,
        subject: &str,
        rec: Option<Record>,
    ) -> Result<Option<Record>, LogError> {
        match rec {
            Some(r) if r.is_record() => Ok(Some(r)),
            Some(r) => read::last_record_before(&self.stream, subject, r.js_seq).await,
            None => Ok(None),
        }
    }

    /// Publishes a sealed batch after the subject's message `base`.
    async fn publish_batch(
        &self,
        subject: &str,
        envs: &[Envelope],
        base: u64,
    ) -> Result<(), PublishFail> {
        let end = envs.last().map_or(0, |e| e.seq);
        let mut expected_js = base;
        for env in envs {
            let headers = |msg_id: &str| record_headers(msg_id, env.seq, base, end, expected_js);
            expected_js = self.publish_one(subject, env, headers).await?;
        }
        Ok(())
    }

    /// Publishes one record until acknowledged; returns its JetStream sequence.
    async fn publish_one(
        &self,
        subject: &str,
        env: &Envelope,
        headers: impl Fn(&str) -> HeaderMap,
    ) -> Result<u64, PublishFail> {
        let payload =
            Bytes::from(serde_json::to_vec(env).map_err(|e| PublishFail::Other(backend(e)))?);
        let mut msg_id = env.id.clone();
        for attempt in 1..=PUBLISH_ATTEMPTS {
            match self
                .publish_acked(subject, headers(&msg_id), payload.clone())
                .await
            {
                Ok(ack) if !ack.duplicate => return Ok(ack.sequence),
                Ok(ack)
                    if self
                        .holds(ack.sequence, env)
                        .await
                        .map_err(PublishFail::Other)? =>
                {
                    return Ok(ack.sequence)
                }
                // The id was used by a message since deleted (an orphan) or
                // holding other content: store under a fresh message id.
                Ok(_) => msg_id = format!("{}:{}", env.id, uuid::Uuid::new_v4()),
                Err(PublishErrorKind::WrongLastSequence) => return Err(PublishFail::WrongLast),
                Err(PublishErrorKind::TimedOut) => {
                    tracing::warn!(
                        subject,
                        attempt,
                        "JetStream ack timed out, publishing again"
                    )
                }
                Err(kind) => {
                    return Err(PublishFail::Other(backend(format!(
                        "publish on {subject}: {kind}"
                    ))))
                }
            }
        }
        Err(PublishFail::Other(backend(format!(
            "publish on {subject}: no ack after {PUBLISH_ATTEMPTS} attempts"
        ))))
    }

    async fn publish_acked(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishAck, PublishErrorKind> {
        let ack: PublishAckFuture = self
            .js
            .publish_with_headers(subject.to_string(), headers, payload)
            .await
            .map_err(|e| e.kind())?;
        ack.await.map_err(|e| e.kind())
    }

    /// Whether JetStream sequence `js_seq` holds exactly `env`.
    async fn holds(&self, js_seq: u64, env: &Envelope) -> Result<bool, LogError> {
        let Some(rec) = read::at(&self.stream, js_seq).await? else {
            return Ok(false);
        };
        Ok(rec.is_record() && rec.envelope(&env.stream).is_ok_and(|e| e == *env))
    }

    /// A retried append (the same ids stored right after `expected`) gets
    /// the stored envelopes; anything else is a conflict.
    async fn dedup_or_conflict(
        &self,
        stream: &str,
        expected: u64,
        actual: u64,
        ids: &[String],
    ) -> Result<Vec<Envelope>, LogError> {
        let conflict = || LogError::Conflict {
            stream: stream.to_string(),
            expected,
            actual,
        };
        if actual < expected + ids.len() as u64 {
            return Err(conflict());
        }
        let stored: Vec<Envelope> = self
            .read_stream(stream, expected + 1)
            .await?
            .take(ids.len())
            .try_collect()
            .await?;
        if stored.iter().map(|e| &e.id).eq(ids.iter()) {
            Ok(stored)
        } else {
            Err(conflict())
        }
    }

    /// Where `read_stream` starts: the JetStream sequence, the verified
    /// head before it and whether that head is signed. Found by binary search on the predecessor; when that
    /// fails (e.g. a tampered, out-of-order stream) from the very start.
    async fn read_start(
        &self,
        stream: &str,
        subject: &str,
        from_seq: u64,
    ) -> Result<(u64, StreamHead, bool), LogError> {
        let start = (1, StreamHead::empty(), false);
        if from_seq <= 1 {
            return Ok(start);
        }
        let Some(last) = last_for(&self.stream, subject).await? else {
            return Ok(start);
        };
        let Some(rec) = self
            .committed_record(subject, from_seq - 1, last.js_seq)
            .await?
        else {
            return Ok(start);
        };
        match verified(&rec, stream, &self.keys) {
            Ok(env) if env.seq == from_seq - 1 => {
                let signed = env.signature.is_some();
                Ok((rec.js_seq + 1, Tail::of(&env, 0).head, signed))
            }
            _ => Ok(start),
        }
    }
}

impl Tail {
    fn empty() -> Self {
        Tail {
            head: StreamHead::empty(),
            last_js: 0,
        }
    }

    fn of(env: &Envelope, last_js: u64) -> Self {
        Tail {
            head: StreamHead {
                seq: env.seq,
                checksum: env.checksum.clone(),
            },
            last_js,
        }
    }
}

/// The envelope of `rec`, which must belong to `stream` and match its
/// checksum (and signature, given a key).
fn verified(rec: &Record, stream: &str, keys: &LogKeys) -> Result<Envelope, IntegrityError> {
    let env = rec.envelope(stream)?;
    if env.stream != stream {
        return Err(IntegrityError::Position {
            stream: stream.to_string(),
            expected: env.seq,
            found_stream: env.stream,
            found: env.seq,
        });
    }
    env.verify_sealed(keys.verifying())?;
    Ok(env)
}

fn record_headers(msg_id: &str, seq: u64, base: u64, end: u64, expected_js: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Content-Type", "application/json");
    h.insert("Nats-Msg-Id", msg_id);
    h.insert(
        "Nats-Expected-Last-Subject-Sequence",
        expected_js.to_string().as_str(),
    );
    h.insert(SEQ_HEADER, seq.to_string().as_str());
    h.insert(BATCH_END_HEADER, end.to_string().as_str());
    h.insert(BATCH_BASE_HEADER, base.to_string().as_str());
    h
}

fn stream_config(subjects: &Subjects, replicas: usize) -> Config {
    Config {
        name: STREAM_NAME.to_string(),
        subjects: vec![subjects.all_events()],
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        allow_direct: true,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

async fn open_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, LogError> {
    if let Ok(store) = js.get_key_value(SNAPSHOT_BUCKET).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: SNAPSHOT_BUCKET.to_string(),
        history: 1,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(backend)
}

#[async_trait]
impl EventLog for JetStreamLog {
    async fn store_batch(&self, batch: CheckedBatch<'_>) -> Result<Vec<Envelope>, LogError> {
        let (stream, expected_seq, events) = batch.into_parts();
        let subject = self.subject_of(stream)?;
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let tail = self.tail(stream, &subject).await?;
        if tail.head.seq != expected_seq {
            return self
                .dedup_or_conflict(stream, expected_seq, tail.head.seq, &ids)
                .await;
        }
        let envs = seal_batch(stream, &tail.head, events, self.keys.signing());
        match self.publish_batch(&subject, &envs, tail.last_js).await {
            Ok(()) => Ok(envs),
            Err(PublishFail::WrongLast) => {
                let actual = self.tail(stream, &subject).await?.head.seq;
                self.dedup_or_conflict(stream, expected_seq, actual, &ids)
                    .await
            }
            Err(PublishFail::Other(e)) => Err(e),
        }
    }

    async fn head(&self, stream: &str) -> Result<StreamHead, LogError> {
        let subject = self.subject_of(stream)?;
        Ok(self.tail(stream, &subject).await?.head)
    }

    async fn read_stream(&self, stream: &str, from_seq: u64) -> Result<EventStream, LogError> {
        let subject = self.subject_of(stream)?;
        let from_seq = from_seq.max(1);
        let (start, head, signed) = self.read_start(stream, &subject, from_seq).await?;
        let scanner = self.scanner(subject, start, false);
        let verifier = ChainVerifier::new(stream, head).with_key(self.keys.verifying(), signed);
        let (tx, rx) = mpsc::channel(READ_BUFFER);
        tokio::spawn(pump_stream(
            scanner,
            stream.to_string(),
            verifier,
            from_seq,
            tx,
        ));
        Ok(rx.boxed())
    }

    async fn read_all(
        &self,
        from_position: u64,
        follow: bool,
    ) -> Result<PositionedStream, LogError> {
        let filter = self.subjects.all_events();
        let scanner = self.scanner(filter, from_position, follow);
        let (tx, rx) = mpsc::channel(READ_BUFFER);
        let key = self.keys.verifying().copied();
        let subjects = self.subjects.clone();
        tokio::spawn(pump_all(scanner, subjects, key, from_position, tx));
        Ok(rx.boxed())
    }

    async fn streams(&self) -> Result<Vec<String>, LogError> {
        let mut subjects = self
            .stream
            .info_with_subjects(self.subjects.all_events())
            .await
            .map_err(backend)?;
        let mut names = BTreeSet::new();
        while let Some(item) = subjects.next().await {
            let (subject, count) = item.map_err(backend)?;
            if let Some(name) = read::stream_of(&self.subjects, &subject).filter(|_| count > 0) {
                names.insert(name);
            }
        }
        Ok(names.into_iter().collect())
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), LogError> {
        self.snapshots.save(stream, &snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, LogError> {
        self.snapshots.load(stream).await
    }

    async fn removed_positions(&self) -> Result<Vec<RangeInclusive<u64>>, LogError> {
        let state = self
            .stream
            .info_builder()
            .with_deleted(true)
            .fetch()
            .await
            .map_err(backend)?
            .info
            .state;
        // What is stored: from the first message to the last, less the
        // interior deletions JetStream lists.
        let mut deleted = state.deleted.unwrap_or_default();
        deleted.sort_unstable();
        let mut present = Vec::new();
        let mut from = state.first_sequence.max(1);
        for d in deleted {
            if d < from {
                continue;
            }
            if d > from {
                present.push(from..=d - 1);
            }
            from = d + 1;
        }
        if state.messages > 0 && from <= state.last_sequence {
            present.push(from..=state.last_sequence);
        }
        Ok(crate::missing_ranges(present, state.last_sequence))
    }

    fn publishes_events(&self) -> bool {
        true
    }
}
