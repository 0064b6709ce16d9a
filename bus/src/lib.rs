//! The two things every actor needs from the outside world: a [`Bus`] to
//! exchange messages on NATS subjects and an [`EventLog`] to store events;
//! and, for replicas of which exactly one may drive some work, a
//! [`LeaseStore`] of named leases (in `lease`).
//!
//! All three are traits with two providers each, chosen at start-up:
//!
//! | | [`Bus`] | [`EventLog`] | [`LeaseStore`] |
//! |---|---|---|---|
//! | embedded (default, nothing to install) | [`embedded::EmbeddedBus`]: in-process subject router with NATS semantics | [`embedded::SledLog`]: sled trees, checksummed and hash-chained, durable on return | [`embedded::EmbeddedLeases`]: an in-process map |
//! | NATS (many processes) | [`nats::NatsBus`]: async-nats core | [`nats::JetStreamLog`]: the `FLOTILLA_EVENTS` stream, KV for snapshots | [`nats::NatsLeases`]: the `FLOTILLA_LEASES` KV bucket, compare-and-set |
//!
//! The same conformance suite (`conformance`) runs against both, in the
//! manner of Restate's Bifrost: one trait, several providers, one test suite.
//! It, the test harness (`testing`) and `embedded::corrupt_event_for_test`
//! are for tests only: they exist with the `test-util` feature, which the
//! workspace's tests enable through their dev-dependencies.
//! Messages and envelopes come from `flotilla-messages`; the actix host in
//! `flotilla-host` is the only writer of the log.

#![warn(missing_docs)]

#[cfg(feature = "test-util")]
pub mod conformance;
mod corrupt_streams;
pub mod embedded;
pub mod lease;
pub mod nats;
#[cfg(feature = "test-util")]
pub mod testing;

pub use corrupt_streams::CorruptStreams;
pub use flotilla_messages::{SigningKey, VerifyingKey};
pub use lease::{Lease, LeaseError, LeaseState, LeaseStore};

use async_trait::async_trait;
use bytes::Bytes;
use flotilla_messages::{Envelope, IntegrityError, PendingEvent};
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Message headers (NATS headers, single-valued).
pub type Headers = BTreeMap<String, String>;

/// A message on a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published on.
    pub subject: String,
    /// Where to send a reply, for requests.
    pub reply: Option<String>,
    /// Headers such as `Content-Type` and `Nats-Msg-Id`.
    pub headers: Headers,
    /// The body.
    pub payload: Bytes,
}

impl Message {
    /// A message with no reply subject and no headers.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            subject: subject.into(),
            reply: None,
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_string(), value.into());
        self
    }

    /// The message signed by `signer` now, as a command of the signer's
    /// own or, with `for_whom`, on behalf of a caller it authenticated (see
    /// `flotilla_messages::auth::signature`); the signature covers the
    /// subject, the payload and the `Nats-Msg-Id` already set.
    pub fn signed_by(
        self,
        signer: &flotilla_messages::auth::CommandSigner,
        for_whom: Option<&str>,
    ) -> Self {
        let now = chrono::Utc::now().timestamp_micros();
        let headers = signer.headers(
            &self.subject,
            for_whom,
            now,
            self.header("Nats-Msg-Id"),
            &self.payload,
        );
        headers
            .into_iter()
            .fold(self, |msg, (name, value)| msg.with_header(name, value))
    }

    /// A header's value, matched case-insensitively as NATS clients do.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A subject or pattern that NATS would refuse.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// Nobody subscribes to the request's subject.
    #[error("no responders on {0}")]
    NoResponders(String),
    /// The request got no reply in time.
    #[error("request on {subject} timed out after {timeout:?}")]
    Timeout {
        /// The request subject.
        subject: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The connection is gone.
    #[error("bus connection failed: {0}")]
    Connection(String),
    /// The server refused this connection's user a subject (NATS
    /// authorization): a request on it can never be answered.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The subject refused.
        subject: String,
        /// What the server said.
        message: String,
    },
}

/// A live subscription: a stream of messages that ends when the bus closes.
/// Dropping it unsubscribes.
pub struct Subscription {
    inner: BoxStream<'static, Message>,
}

impl Subscription {
    /// Wraps a stream of messages.
    pub fn new(inner: BoxStream<'static, Message>) -> Self {
        Subscription { inner }
    }

    /// The next message, or `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<Message> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl futures::Stream for Subscription {
    type Item = Message;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Publish/subscribe and request/reply on NATS subjects.
///
/// Semantics are NATS core's: at-most-once delivery, `*` and `>` wildcards,
/// queue groups deliver each message to one member per group, and a request
/// with no subscriber fails at once with [`BusError::NoResponders`].
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message (its `reply` is passed along).
    async fn publish(&self, msg: Message) -> Result<(), BusError>;
    /// Subscribes to a subject pattern.
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError>;
    /// Subscribes as a member of a queue group.
    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError>;
    /// Sends a request and waits for the first reply.
    async fn request(&self, msg: Message, timeout: Duration) -> Result<Message, BusError>;
    /// Waits until everything published so far has left this process.
    async fn flush(&self) -> Result<(), BusError>;
    /// The largest message payload the transport carries, if it has a limit
    /// (NATS: the server's `max_payload`, 1 MiB by default). Hosts keep what
    /// a command writes and answers below it.
    fn max_payload(&self) -> Option<usize> {
        None
    }
    /// Why the bus cannot carry messages right now (its server connection
    /// is down), for readiness probes; `None` while it can. An in-process
    /// bus is always connected.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// Why an event log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Optimistic concurrency: the stream is not at the expected sequence.
    #[error("stream {stream}: expected last seq {expected}, but it is {actual}")]
    Conflict {
        /// The stream.
        stream: String,
        /// What the writer expected.
        expected: u64,
        /// What the log holds.
        actual: u64,
    },
    /// A stored record failed its checksum, hash chain or position check.
    #[error("corrupt event log: {0}")]
    Corrupt(#[from] IntegrityError),
    /// A snapshot that does not fit its stream.
    #[error("stream {stream}: bad snapshot: {reason}")]
    BadSnapshot {
        /// The stream.
        stream: String,
        /// What is wrong.
        reason: String,
    },
    /// An invalid argument (empty batch, bad stream name...).
    #[error("invalid log request: {0}")]
    Invalid(String),
    /// Acknowledged events are missing from the end of the log (the storage
    /// dropped records after a damaged one).
    #[error("event log truncated: positions up to {acknowledged} were acknowledged, but the log ends at {found}")]
    Truncated {
        /// The last position known to have been durable.
        acknowledged: u64,
        /// The last position found.
        found: u64,
    },
    /// A storage file is damaged (the embedded backend's sled files, or
    /// its watermark), so the log cannot be opened or read as stored.
    #[error("damaged storage file {}{}: {reason}", .file.display(), at_offset(.offset))]
    Damaged {
        /// The file.
        file: std::path::PathBuf,
        /// Where in it, when the storage says.
        offset: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// Events were removed from the log (deleted or purged) at these global
    /// positions.
    #[error("events at log positions {first}..={last} were deleted or purged (the log never removes an event)")]
    Removed {
        /// The first missing position.
        first: u64,
        /// The last missing position.
        last: u64,
    },
    /// The storage backend failed (I/O, connection, timeout).
    #[error("event log backend failed: {0}")]
    Backend(String),
    /// Another process holds the embedded log's files: one writer per data
    /// dir.
    #[error("the event log in {} is in use by another process (is `flotilla up` running on it? use --http to reach it)", .dir.display())]
    InUse {
        /// The log's directory.
        dir: std::path::PathBuf,
    },
}

impl LogError {
    /// Whether this is damage to what is stored (a bad record, missing
    /// events, a damaged file), reported as `CORRUPT`, rather than a
    /// failure to reach the storage.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            LogError::Corrupt(_) | LogError::Truncated { .. } | LogError::Damaged { .. }
        )
    }
}

/// ` at offset N`, or nothing when the offset is unknown.
fn at_offset(offset: &Option<u64>) -> String {
    offset
        .map(|o| format!(" at offset {o}"))
        .unwrap_or_default()
}

/// An event together with its position in the global order of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Positioned {
    /// Position in the whole log (1-based; sled key or JetStream sequence).
    pub position: u64,
    /// The event.
    pub envelope: Envelope,
}

/// A stored snapshot of an aggregate's state after event `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The seq of the last event folded into `state`.
    pub seq: u64,
    /// That event's checksum, so recovery continues the hash chain from here.
    pub checksum: String,
    /// The encoded state (the host's choice of encoding).
    pub state: Vec<u8>,
}

/// What a stream currently ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// The last seq (0 for an empty stream).
    pub seq: u64,
    /// The last event's checksum ([`flotilla_messages::GENESIS_HASH`] when empty).
    pub checksum: String,
}

/// A stream of verified events.
pub type EventStream = BoxStream<'static, Result<Envelope, LogError>>;
/// A stream of verified events in global order.
pub type PositionedStream = BoxStream<'static, Result<Positioned, LogError>>;

/// The append-only, per-stream hash-chained event log.
///
/// Every read verifies each event's checksum and its link to its
/// predecessor; a bad record ends the read with [`LogError::Corrupt`] naming
/// the stream and seq, never a silent skip.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` to `stream` if its last seq is `expected_seq` (0 for
    /// a new stream), all or nothing, durably before returning. Returns the
    /// sealed envelopes. Re-appending a batch whose event ids are already
    /// stored right after `expected_seq` returns the stored envelopes (a
    /// retried append is not a conflict and stores nothing twice).
    ///
    /// Every provider gets the same checks of the batch (non-empty, a valid
    /// stream name) here, before its own [`EventLog::store_batch`] runs.
    async fn append(
        &self,
        stream: &str,
        expected_seq: u64,
        events: Vec<PendingEvent>,
    ) -> Result<Vec<Envelope>, LogError> {
        let batch = CheckedBatch::new(stream, expected_seq, events)?;
        self.store_batch(batch).await
    }

    /// The provider's half of [`EventLog::append`], with the same contract,
    /// for a batch that passed the checks. Callers use `append`.
    async fn store_batch(&self, batch: CheckedBatch<'_>) -> Result<Vec<Envelope>, LogError>;

    /// The stream's last seq and checksum.
    async fn head(&self, stream: &str) -> Result<StreamHead, LogError>;

    /// The events of `stream` with seq ≥ `from_seq`, verified.
    async fn read_stream(&self, stream: &str, from_seq: u64) -> Result<EventStream, LogError>;

    /// Every event with global position ≥ `from_position`, in append order,
    /// each verified against its stream's chain. With `follow`, the stream
    /// stays open and yields new events as they are appended.
    async fn read_all(
        &self,
        from_position: u64,
        follow: bool,
    ) -> Result<PositionedStream, LogError>;

    /// The names of all streams, sorted.
    async fn streams(&self) -> Result<Vec<String>, LogError>;

    /// Stores a snapshot of `stream` (replacing an older one).
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), LogError>;

    /// The latest snapshot of `stream`.
    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, LogError>;

    /// The global positions that were assigned to events that are gone
    /// (deleted or purged), as inclusive ranges, in order. The log itself
    /// never removes an event, so any range here is a removal from outside:
    /// state rebuilt from the log would silently miss those events. A
    /// provider that cannot tell (a test wrapper) reports none.
    async fn removed_positions(&self) -> Result<Vec<RangeInclusive<u64>>, LogError> {
        Ok(Vec::new())
    }

    /// Whether appending also publishes each event on its `evt` subject (true
    /// for JetStream, whose stream captures that subject). When false, the
    /// host publishes events on the bus itself after the append.
    fn publishes_events(&self) -> bool {
        false
    }
}

/// The ranges of `1..=last` that `present` (ascending, non-overlapping
/// ranges of positions still stored) does not cover.
pub(crate) fn missing_ranges(
    present: impl IntoIterator<Item = RangeInclusive<u64>>,
    last: u64,
) -> Vec<RangeInclusive<u64>> {
    let mut missing = Vec::new();
    let mut next = 1;
    for range in present {
        if *range.start() > next {
            missing.push(next..=range.start() - 1);
        }
        next = next.max(range.end() + 1);
    }
    if last >= next {
        missing.push(next..=last);
    }
    missing
}

/// Maps any backend failure (I/O, connection, timeout) to [`LogError::Backend`].
pub(crate) fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

/// A batch for [`EventLog::store_batch`], made only by [`EventLog::append`]'s
/// checks: its events are not empty and its stream is `<actor>/<id>`, so no
/// provider is ever handed a batch that skipped them.
#[derive(Debug)]
pub struct CheckedBatch<'a> {
    stream: &'a str,
    expected_seq: u64,
    events: Vec<PendingEvent>,
}

impl<'a> CheckedBatch<'a> {
    fn new(
        stream: &'a str,
        expected_seq: u64,
        events: Vec<PendingEvent>,
    ) -> Result<Self, LogError> {
        if events.is_empty() {
            return Err(LogError::Invalid(format!("stream {stream}: empty batch")));
        }
        check_stream_name(stream)?;
        Ok(CheckedBatch {
            stream,
            expected_seq,
            events,
        })
    }

    /// The stream, the seq its head must have, and the events.
    pub fn into_parts(self) -> (&'a str, u64, Vec<PendingEvent>) {
        (self.stream, self.expected_seq, self.events)
    }
}

/// Checks that `stream` is `<actor>/<id>`.
pub(crate) fn check_stream_name(stream: &str) -> Result<(), LogError> {
    stream
        .parse::<flotilla_messages::StreamName>()
        .map(|_| ())
        .map_err(|e| LogError::Invalid(e.to_string()))
}

/// The keys a log signs its appends with and checks its reads against.
///
/// The control plane holds the signing key (and so the public key); a reader
/// such as `audit` holds only the public key; without either, events are
/// neither signed nor checked (the log as it was before signing).
#[derive(Debug, Clone, Default)]
pub struct LogKeys {
    signing: Option<SigningKey>,
    verifying: Option<VerifyingKey>,
}

impl LogKeys {
    /// A writer's keys: signs every appended event, checks what it reads.
    pub fn signer(key: SigningKey) -> Self {
        LogKeys {
            verifying: Some(key.verifying_key()),
            signing: Some(key),
        }
    }

    /// A reader's key: checks signatures, signs nothing.
    pub fn verifier(key: VerifyingKey) -> Self {
        LogKeys {
            signing: None,
            verifying: Some(key),
        }
    }

    /// The key appends are signed with.
    pub fn signing(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }

    /// The public key reads are checked against.
    pub fn verifying(&self) -> Option<&VerifyingKey> {
        self.verifying.as_ref()
    }
}

/// Seals a batch after `head`: seqs from `head.seq + 1`, each chained to the
/// previous and signed with `key` when there is one.
pub fn seal_batch(
    stream: &str,
    head: &StreamHead,
    events: Vec<PendingEvent>,
    key: Option<&SigningKey>,
) -> Vec<Envelope> {
    let mut prev = head.checksum.clone();
    let mut seq = head.seq;
    events
        .into_iter()
        .map(|e| {
            seq += 1;
            let env = e.seal_signed(stream, seq, &prev, key);
            prev = env.checksum.clone();
            env
        })
        .collect()
}

/// Checks the signatures of a run of events (of one or several streams)
/// whose checksums, chains and signature policy are already verified, with
/// one Ed25519 verification per stream instead of one per event: each
/// checksum covers its predecessor's, so a stream's last signed event's
/// valid signature vouches for every event before it. Only when that fails
/// are that stream's signed events checked, and the run is cut at the first
/// forged one (which ends it as an error).
pub(crate) fn settle_signatures<T>(
    run: &mut Vec<Result<T, LogError>>,
    key: Option<&VerifyingKey>,
    envelope: impl Fn(&T) -> &Envelope,
) {
    let Some(key) = key else { return };
    let mut last_signed: BTreeMap<&str, &Envelope> = BTreeMap::new();
    for env in run.iter().flatten().map(&envelope) {
        if env.signature.is_some() {
            last_signed.insert(&env.stream, env);
        }
    }
    let failing: Vec<String> = last_signed
        .values()
        .filter(|env| env.verify_sealed(Some(key)).is_err())
        .map(|env| env.stream.clone())
        .collect();
    if failing.is_empty() {
        return;
    }
    let forged = run.iter().enumerate().find_map(|(i, r)| {
        let env = envelope(r.as_ref().ok()?);
        if !failing.contains(&env.stream) {
            return None;
        }
        env.verify_sealed(Some(key)).err().map(|e| (i, e))
    });
    if let Some((i, e)) = forged {
        run.truncate(i);
        run.push(Err(e.into()));
    }
}

/// Verifies envelopes read in stream order, tracking the chain and, with a
/// public key, the signatures.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    stream: String,
    next_seq: u64,
    prev_checksum: String,
    key: Option<VerifyingKey>,
    signed_before: bool,
}

impl ChainVerifier {
    /// A verifier for `stream` that expects `after.seq + 1` next.
    pub fn new(stream: &str, after: StreamHead) -> Self {
        ChainVerifier {
            stream: stream.to_string(),
            next_seq: after.seq + 1,
            prev_checksum: after.checksum,
            key: None,
            signed_before: false,
        }
    }

    /// Also checks signatures against `key` (when there is one);
    /// `signed_before` tells whether the event before `after` was signed,
    /// for a read that does not start at the stream's first event.
    pub fn with_key(mut self, key: Option<&VerifyingKey>, signed_before: bool) -> Self {
        self.key = key.copied();
        self.signed_before = signed_before;
        self
    }

    /// Checks the next envelope and advances.
    pub fn check(&mut self, env: &Envelope) -> Result<(), IntegrityError> {
        env.verify_position(&self.stream, self.next_seq)?;
        self.check_verified(env, env.verify_sealed(self.key.as_ref()))
    }

    /// Like [`Self::check`], with the verdict of
    /// [`Envelope::verify_sealed`] computed elsewhere (readers hash in
    /// parallel; the chain itself is checked in order).
    pub fn check_verified(
        &mut self,
        env: &Envelope,
        checksum: Result<(), IntegrityError>,
    ) -> Result<(), IntegrityError> {
        env.verify_position(&self.stream, self.next_seq)?;
        checksum?;
        env.verify_link(&self.stream, &self.prev_checksum)?;
        if self.key.is_some() {
            env.verify_unsigned_after(self.signed_before)?;
            self.signed_before |= env.signature.is_some();
        }
        self.next_seq += 1;
        self.prev_checksum.clone_from(&env.checksum);
        Ok(())
    }

    /// The head after everything checked so far.
    pub fn head(&self) -> StreamHead {
        StreamHead {
            seq: self.next_seq - 1,
            checksum: self.prev_checksum.clone(),
        }
    }
}

impl StreamHead {
    /// The head of an empty stream.
    pub fn empty() -> Self {
        StreamHead {
            seq: 0,
            checksum: flotilla_messages::GENESIS_HASH.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_run(key: &SigningKey, n: u64) -> Vec<Result<Envelope, LogError>> {
        let events = (0..n)
            .map(|i| conformance::event(&format!("e{i}"), i))
            .collect();
        seal_batch("solver/s", &StreamHead::empty(), events, Some(key))
            .into_iter()
            .map(Ok)
            .collect()
    }

    fn seqs(run: &[Result<Envelope, LogError>]) -> Vec<Result<u64, String>> {
        run.iter()
            .map(|r| r.as_ref().map(|e| e.seq).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn one_signature_settles_a_run_and_a_forged_one_is_named() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut run = signed_run(&key, 3);
        settle_signatures(&mut run, Some(&key.verifying_key()), |e| e);
        assert_eq!(seqs(&run), vec![Ok(1), Ok(2), Ok(3)]);

        let other = SigningKey::from_bytes(&[2; 32]);
        let mut run = signed_run(&key, 3);
        if let Ok(last) = &mut run[2] {
            last.signature = signed_run(&other, 3)[2].as_ref().unwrap().signature.clone();
        }
        settle_signatures(&mut run, Some(&key.verifying_key()), |e| e);
        let named = seqs(&run);
        assert_eq!(&named[..2], &[Ok(1), Ok(2)]);
        assert!(
            matches!(&named[2], Err(m) if m.contains("seq 3: signature invalid")),
            "{named:?}"
        );

        let mut run = signed_run(&other, 2);
        settle_signatures(&mut run, Some(&key.verifying_key()), |e| e);
        assert!(
            matches!(&seqs(&run)[..], [Err(m)] if m.contains("seq 1")),
            "cut at the first"
        );
    }

    #[test]
    fn missing_ranges_are_the_gaps_the_head_and_the_tail() {
        assert_eq!(missing_ranges([1..=3, 4..=9], 9), vec![]);
        assert_eq!(
            missing_ranges([3..=4, 7..=8], 10),
            vec![1..=2, 5..=6, 9..=10]
        );
        assert_eq!(missing_ranges([], 4), vec![1..=4]);
        assert_eq!(missing_ranges([], 0), vec![]);
    }
}
