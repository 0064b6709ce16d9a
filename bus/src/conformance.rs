//! The conformance suite: one set of checks that every [`Bus`],
//! [`EventLog`] and [`LeaseStore`] provider must pass.
//!
//! Each check is a `pub async fn` taking an `Arc<dyn Bus>`, a
//! [`LogFixture`] or a [`LeaseFixture`]; the test files `bus/tests/conformance_embedded.rs` and
//! `bus/tests/conformance_nats.rs` call every one of them against their
//! backend (embedded router + sled, or async-nats + JetStream). Checks panic
//! with a message on failure, like `assert!`.

use crate::lease::wall_clock_ms;
use crate::{Bus, BusError, EventLog, EventStream, LogError, Message, Positioned, Snapshot};
use crate::{Lease, LeaseError, LeaseState, LeaseStore};
use crate::{LogKeys, SigningKey, StreamHead, Subscription};
use async_trait::async_trait;
use flotilla_messages::envelope::now_micros;
use flotilla_messages::{Envelope, Payload, PendingEvent, GENESIS_HASH};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a check waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long a check waits to be sure something does not happen.
const QUIET: Duration = Duration::from_millis(300);

/// Gives the log checks a backend and its storage.
#[async_trait]
pub trait LogFixture: Send + Sync {
    /// A handle on the log (the same storage for the fixture's lifetime).
    async fn log(&self) -> Arc<dyn EventLog>;
    /// A fresh handle on the same storage, as after a restart. Callers drop
    /// their older handles first.
    async fn reopen(&mut self) -> Arc<dyn EventLog>;
    /// Damages the stored record of (`stream`, `seq`) the way a disk fault
    /// or an attacker would. Callers drop their handles first.
    async fn corrupt(&mut self, stream: &str, seq: u64);
    /// A handle on the same storage that signs and checks with `keys`.
    async fn with_keys(&self, keys: LogKeys) -> Arc<dyn EventLog>;
}

/// A pending event with id `id` and payload `{"type": "tick", "n": n}`.
pub fn event(id: &str, n: u64) -> PendingEvent {
    PendingEvent {
        id: id.to_string(),
        event_type: "tick".to_string(),
        at: now_micros(),
        causation_id: format!("cmd-{id}"),
        correlation_id: "conformance".to_string(),
        payload: Payload::from_value(&serde_json::json!({"type": "tick", "n": n})),
        principal: Some("conformance".to_string()),
    }
}

/// `count` events with fresh ids.
pub fn events(count: u64) -> Vec<PendingEvent> {
    (0..count)
        .map(|n| event(&uuid::Uuid::new_v4().to_string(), n))
        .collect()
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

/// Every item of a read, or the first error.
pub async fn collect(stream: EventStream) -> Result<Vec<Envelope>, LogError> {
    within("reading a stream", stream.collect::<Vec<_>>())
        .await
        .into_iter()
        .collect()
}

async fn read(log: &dyn EventLog, stream: &str, from: u64) -> Vec<Envelope> {
    let read = log.read_stream(stream, from).await.expect("read_stream");
    collect(read).await.expect("a clean read")
}

async fn read_all(log: &dyn EventLog, from: u64) -> Vec<Positioned> {
    let all = log.read_all(from, false).await.expect("read_all");
    let items: Vec<_> = within("read_all", all.collect::<Vec<_>>()).await;
    items
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("a clean read_all")
}

async fn append(
    log: &dyn EventLog,
    stream: &str,
    expected: u64,
    batch: Vec<PendingEvent>,
) -> Vec<Envelope> {
    log.append(stream, expected, batch)
        .await
        .unwrap_or_else(|e| panic!("append to {stream} at {expected}: {e}"))
}

fn seqs(envs: &[Envelope]) -> Vec<u64> {
    envs.iter().map(|e| e.seq).collect()
}

fn assert_chained(envs: &[Envelope]) {
    let mut prev = GENESIS_HASH.to_string();
    for (i, env) in envs.iter().enumerate() {
        assert_eq!(env.seq, i as u64 + 1, "seqs are gap-free from 1");
        assert_eq!(
            env.prev_hash, prev,
            "seq {} links to its predecessor",
            env.seq
        );
        assert!(env.verify().is_ok(), "seq {} has a valid checksum", env.seq);
        prev = env.checksum.clone();
    }
}

fn assert_conflict(result: Result<Vec<Envelope>, LogError>, want_expected: u64, want_actual: u64) {
    match result {
        Err(LogError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(
                (expected, actual),
                (want_expected, want_actual),
                "conflict seqs"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Each stream's seqs are gap-free from 1 in append order, chained, and
/// `head` reports the last one.
pub async fn log_orders_each_stream(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let (a, b) = ("solver/order-a", "scheduler/order-b");
    let mut stored_a = append(&*log, a, 0, events(2)).await;
    let stored_b = append(&*log, b, 0, events(1)).await;
    stored_a.extend(append(&*log, a, 2, events(3)).await);
    assert_eq!(seqs(&stored_a), vec![1, 2, 3, 4, 5]);
    assert_eq!(seqs(&stored_b), vec![1]);
    let read_a = read(&*log, a, 1).await;
    assert_eq!(read_a, stored_a, "read_stream returns what append returned");
    assert_chained(&read_a);
    assert_eq!(read(&*log, b, 1).await, stored_b);
    let head = log.head(a).await.expect("head");
    assert_eq!(
        head,
        StreamHead {
            seq: 5,
            checksum: stored_a[4].checksum.clone()
        }
    );
    assert_eq!(
        log.head("solver/none").await.expect("head"),
        StreamHead::empty()
    );
}

/// `read_all` yields every event once, in append order, with increasing
/// positions, and resumes from a position.
pub async fn log_reads_all_in_global_order(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let mut appended = Vec::new();
    let mut heads: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, stream) in [
        "solver/g1",
        "health/g2",
        "solver/g1",
        "inference/g3",
        "health/g2",
    ]
    .into_iter()
    .enumerate()
    {
        let expected = *heads.get(stream).unwrap_or(&0);
        let envs = append(&*log, stream, expected, events(1 + i as u64 % 2)).await;
        heads.insert(stream, expected + envs.len() as u64);
        appended.extend(envs);
    }
    let all = read_all(&*log, 1).await;
    let got: Vec<&Envelope> = all.iter().map(|p| &p.envelope).collect();
    assert_eq!(
        got,
        appended.iter().collect::<Vec<_>>(),
        "global append order"
    );
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions increase"
    );
    let third = all[3].position;
    let tail = read_all(&*log, third).await;
    assert_eq!(tail, all[3..].to_vec(), "read_all from a position");
    let past_end = all.last().map_or(1, |p| p.position + 1);
    assert!(read_all(&*log, past_end).await.is_empty());
}

/// A wrong expected seq is a [`LogError::Conflict`] and stores nothing.
pub async fn log_rejects_wrong_expected_seq(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let s = "provisioner/occ";
    let stored = append(&*log, s, 0, events(2)).await;
    assert_conflict(log.append(s, 0, events(1)).await, 0, 2);
    assert_conflict(log.append(s, 1, events(1)).await, 1, 2);
    assert_conflict(log.append(s, 7, events(1)).await, 7, 2);
    assert_conflict(log.append("provisioner/new", 3, events(1)).await, 3, 0);
    assert_eq!(read(&*log, s, 1).await, stored, "nothing appended");
    assert_eq!(log.head("provisioner/new").await.expect("head").seq, 0);
    let next = append(&*log, s, 2, events(1)).await;
    assert_eq!(seqs(&next), vec![3]);
}

/// A batch is stored whole (consecutive, chained) or not at all; bad
/// requests are [`LogError::Invalid`].
pub async fn log_appends_batches_all_or_nothing(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let s = "solver/batch";
    let first = append(&*log, s, 0, events(3)).await;
    assert_chained(&first);
    assert_conflict(log.append(s, 1, events(4)).await, 1, 3);
    assert!(matches!(
        log.append(s, 3, Vec::new()).await,
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(
        log.append("bogus/x", 0, events(1)).await,
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(
        log.append("solver/a.b", 0, events(1)).await,
        Err(LogError::Invalid(_))
    ));
    let second = append(&*log, s, 3, events(4)).await;
    assert_eq!(seqs(&second), vec![4, 5, 6, 7]);
    let all = read(&*log, s, 1).await;
    assert_eq!(all.len(), 7, "exactly the two accepted batches");
    assert_chained(&all);
    assert_eq!(log.streams().await.expect("streams"), vec![s.to_string()]);
}

/// Re-appending a batch whose ids are stored right after the expected seq
/// returns the stored envelopes and stores nothing twice.
pub async fn log_deduplicates_retried_appends(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let s = "scheduler/dedup";
    let batch = vec![event("dup-a", 1), event("dup-b", 2)];
    let stored = append(&*log, s, 0, batch.clone()).await;
    let again = append(&*log, s, 0, batch.clone()).await;
    assert_eq!(
        again, stored,
        "a retried append returns the stored envelopes"
    );
    assert_eq!(log.head(s).await.expect("head").seq, 2);
    let other = vec![event("dup-a", 1), event("dup-c", 3)];
    assert_conflict(log.append(s, 0, other).await, 0, 2);
    let later = append(&*log, s, 2, vec![event("dup-d", 4)]).await;
    assert_eq!(seqs(&later), vec![3]);
    assert_eq!(
        append(&*log, s, 0, batch).await,
        stored,
        "still after more appends"
    );
    let all = read(&*log, s, 1).await;
    let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["dup-a", "dup-b", "dup-d"],
        "each event stored once"
    );
}

/// `read_stream` from a seq yields exactly the events from there on.
pub async fn log_reads_stream_from_seq(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let s = "inference/from";
    let mut stored = append(&*log, s, 0, events(3)).await;
    stored.extend(append(&*log, s, 3, events(4)).await);
    stored.extend(append(&*log, s, 7, events(3)).await);
    append(&*log, "inference/other", 0, events(2)).await;
    for from in [0, 1, 2, 4, 5, 8, 10] {
        let start = from.max(1) as usize - 1;
        assert_eq!(
            read(&*log, s, from).await,
            stored[start..].to_vec(),
            "from {from}"
        );
    }
    assert!(read(&*log, s, 11).await.is_empty(), "past the end");
    assert!(
        read(&*log, "inference/missing", 1).await.is_empty(),
        "unknown stream"
    );
}

/// `read_all` with `follow` yields the past and then later appends.
pub async fn log_follows_new_events(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let s = "health/follow";
    let first = append(&*log, s, 0, events(2)).await;
    let mut live = log.read_all(1, true).await.expect("read_all follow");
    for env in &first {
        let got = within("past event", live.next())
            .await
            .expect("open")
            .expect("ok");
        assert_eq!(&got.envelope, env);
    }
    let quiet = tokio::time::timeout(QUIET, live.next()).await;
    assert!(quiet.is_err(), "nothing more yet: {quiet:?}");
    let writer = log.clone();
    let later = tokio::spawn(async move { writer.append("health/follow", 2, events(2)).await });
    let later = later.await.expect("task").expect("append");
    for env in &later {
        let got = within("followed event", live.next())
            .await
            .expect("open")
            .expect("ok");
        assert_eq!(&got.envelope, env);
    }
}

/// `streams` lists every stream with events, sorted.
pub async fn log_lists_streams(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    assert!(log.streams().await.expect("streams").is_empty());
    for s in ["solver/b", "scheduler/a", "solver/a", "solver/b"] {
        let head = log.head(s).await.expect("head").seq;
        append(&*log, s, head, events(1)).await;
    }
    let want = vec!["scheduler/a", "solver/a", "solver/b"];
    assert_eq!(log.streams().await.expect("streams"), want);
}

/// Large batches read back whole and from any seq or position inside them,
/// and a retried large batch is not stored twice.
pub async fn log_handles_large_batches(fx: &mut impl LogFixture) {
    let (s, other) = ("solver/large", "solver/large-other");
    let log = fx.log().await;
    let first = events(100);
    let stored = append(&*log, s, 0, first.clone()).await;
    append(&*log, other, 0, events(3)).await;
    let mut all = stored.clone();
    all.extend(append(&*log, s, 100, events(37)).await);
    assert_eq!(read(&*log, s, 1).await, all);
    assert_eq!(read(&*log, s, 50).await, all[49..].to_vec());
    assert_eq!(read(&*log, s, 101).await, all[100..].to_vec());
    assert_eq!(read(&*log, s, 137).await, all[136..].to_vec());
    assert!(read(&*log, s, 138).await.is_empty());
    assert_eq!(
        log.append(s, 0, first).await.expect("a retried batch"),
        stored
    );
    assert_eq!(log.head(s).await.expect("head").seq, 137);
    let global = read_all(&*log, 1).await;
    assert_eq!(global.len(), 140);
    let tail = read_all(&*log, global[120].position).await;
    assert_eq!(tail.len(), 20);
    assert_eq!(tail[0], global[120]);
}

/// Snapshots are saved, loaded, replaced, and kept per stream.
pub async fn log_stores_snapshots(fx: &mut impl LogFixture) {
    let log = fx.log().await;
    let (a, b) = ("solver/snap-a", "solver/snap-b");
    assert_eq!(log.load_snapshot(a).await.expect("load"), None);
    let first = Snapshot {
        seq: 3,
        checksum: "c3".repeat(32),
        state: b"{\"n\":3}".to_vec(),
    };
    log.save_snapshot(a, first.clone()).await.expect("save");
    assert_eq!(log.load_snapshot(a).await.expect("load"), Some(first));
    let newer = Snapshot {
        seq: 9,
        checksum: "c9".repeat(32),
        state: vec![0, 159, 255, 1],
    };
    log.save_snapshot(a, newer.clone()).await.expect("save");
    assert_eq!(log.load_snapshot(a).await.expect("load"), Some(newer));
    assert_eq!(
        log.load_snapshot(b).await.expect("load"),
        None,
        "per stream"
    );
    let empty = Snapshot {
        seq: 1,
        checksum: String::new(),
        state: Vec::new(),
    };
    log.save_snapshot(b, empty.clone()).await.expect("save");
    assert_eq!(log.load_snapshot(b).await.expect("load"), Some(empty));
    assert!(log
        .save_snapshot(
            "nope",
            Snapshot {
                seq: 1,
                checksum: String::new(),
                state: vec![]
            }
        )
        .await
        .is_err());
}

/// Everything acknowledged is there after a reopen, and appends continue.
pub async fn log_survives_reopen(fx: &mut impl LogFixture) {
    let s = "provisioner/durable";
    let log = fx.log().await;
    let mut stored = append(&*log, s, 0, events(3)).await;
    stored.extend(append(&*log, s, 3, events(2)).await);
    let snap = Snapshot {
        seq: 5,
        checksum: stored[4].checksum.clone(),
        state: b"state".to_vec(),
    };
    log.save_snapshot(s, snap.clone()).await.expect("save");
    drop(log);
    let log = fx.reopen().await;
    assert_eq!(read(&*log, s, 1).await, stored, "events survive");
    assert_eq!(
        log.head(s).await.expect("head").checksum,
        stored[4].checksum
    );
    assert_eq!(log.load_snapshot(s).await.expect("load"), Some(snap));
    assert_eq!(log.streams().await.expect("streams"), vec![s.to_string()]);
    let next = append(&*log, s, 5, events(1)).await;
    assert_eq!(next[0].prev_hash, stored[4].checksum, "the chain continues");
}

fn assert_corrupt_at(err: &LogError, stream: &str, seq: u64) {
    match err {
        LogError::Corrupt(e) => assert_eq!(e.location(), (stream, seq), "location of {e}"),
        other => panic!("expected Corrupt at {stream} seq {seq}, got {other}"),
    }
}

/// Reads until the first error, which must exist.
async fn read_until_error(stream: EventStream) -> (Vec<Envelope>, LogError) {
    let items: Vec<_> = within("corrupt read", stream.collect::<Vec<_>>()).await;
    let good: Vec<Envelope> = items
        .iter()
        .map_while(|i| i.as_ref().ok().cloned())
        .collect();
    match items.into_iter().nth(good.len()) {
        Some(Err(e)) => (good, e),
        _ => panic!(
            "a read over a corrupt record ended cleanly after {} events",
            good.len()
        ),
    }
}

/// A damaged record is reported as [`LogError::Corrupt`] naming its stream
/// and seq by `read_stream` (from the start or just after it) and by an
/// audit's `read_all`; nothing at or after it is replayed.
pub async fn log_detects_corruption(fx: &mut impl LogFixture) {
    let s = "solver/tamper";
    let log = fx.log().await;
    for expected in 0..5 {
        append(&*log, s, expected, events(1)).await;
    }
    append(&*log, "solver/clean", 0, events(2)).await;
    drop(log);
    fx.corrupt(s, 3).await;
    let log = fx.reopen().await;
    let (good, err) = read_until_error(log.read_stream(s, 1).await.expect("read")).await;
    assert_eq!(seqs(&good), vec![1, 2], "only events before the damage");
    assert_corrupt_at(&err, s, 3);
    let (good, err) = read_until_error(log.read_stream(s, 4).await.expect("read")).await;
    assert!(good.is_empty(), "nothing after a broken link: {good:?}");
    assert_corrupt_at(&err, s, 3);
    let all: Vec<_> = within(
        "audit",
        log.read_all(1, false)
            .await
            .expect("read_all")
            .collect::<Vec<_>>(),
    )
    .await;
    let replayed: Vec<u64> = all
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .filter(|p| p.envelope.stream == s)
        .map(|p| p.envelope.seq)
        .collect();
    assert!(
        replayed.iter().all(|&seq| seq < 3),
        "audit replayed {replayed:?}"
    );
    let err = all
        .into_iter()
        .find_map(Result::err)
        .expect("the audit fails");
    assert_corrupt_at(&err, s, 3);
    assert_eq!(
        read(&*log, "solver/clean", 1).await.len(),
        2,
        "other streams read fine"
    );
}

/// A writer with the key signs every event; readers with its public key
/// accept them (and older unsigned ones before them), and refuse an event
/// signed with another key or an unsigned one after signed ones.
pub async fn log_checks_signatures(fx: &mut impl LogFixture) {
    let (s, forged) = ("solver/signed", "solver/forged");
    let key = SigningKey::from_bytes(&[3; 32]);
    let public = || LogKeys::verifier(key.verifying_key());
    let unsigned = fx.log().await;
    append(&*unsigned, s, 0, events(1)).await;
    let signer = fx.with_keys(LogKeys::signer(key.clone())).await;
    let signed = append(&*signer, s, 1, events(2)).await;
    assert!(signed.iter().all(|e| e.signature.is_some()), "{signed:?}");
    let forger = fx
        .with_keys(LogKeys::signer(SigningKey::from_bytes(&[4; 32])))
        .await;
    append(&*forger, forged, 0, events(1)).await;
    append(&*unsigned, s, 3, events(1)).await;

    let reader = fx.with_keys(public()).await;
    let (good, err) = read_until_error(reader.read_stream(s, 1).await.expect("read")).await;
    assert_eq!(
        seqs(&good),
        vec![1, 2, 3],
        "the legacy and the signed events"
    );
    assert!(
        err.to_string().contains("unsigned event after signed ones"),
        "{err}"
    );
    assert_corrupt_at(&err, s, 4);
    let (_, err) = read_until_error(reader.read_stream(s, 4).await.expect("read")).await;
    assert_corrupt_at(&err, s, 4);
    let (good, err) = read_until_error(reader.read_stream(forged, 1).await.expect("read")).await;
    assert!(good.is_empty(), "{good:?}");
    assert!(err.to_string().contains("signature invalid"), "{err}");
    assert_corrupt_at(&err, forged, 1);
    let all = reader.read_all(1, false).await.expect("read_all");
    let all: Vec<_> = within("read_all", all.collect::<Vec<_>>()).await;
    let good: Vec<_> = all
        .iter()
        .map_while(|r| r.as_ref().ok())
        .map(|p| p.envelope.seq)
        .collect();
    assert_eq!(
        good,
        vec![1, 2, 3],
        "in global order, up to the forged event"
    );
    let err = all
        .into_iter()
        .find_map(Result::err)
        .expect("read_all fails");
    assert!(err.to_string().contains("signature invalid"), "{err}");
    assert_corrupt_at(&err, forged, 1);
    assert_eq!(
        read(&*unsigned, s, 1).await.len(),
        4,
        "without a key, nothing is checked"
    );
}

async fn subscribe(bus: &dyn Bus, pattern: &str) -> Subscription {
    let sub = bus.subscribe(pattern).await.expect("subscribe");
    bus.flush().await.expect("flush");
    sub
}

async fn next_msg(sub: &mut Subscription, what: &str) -> Message {
    within(what, sub.next())
        .await
        .unwrap_or_else(|| panic!("subscription ended: {what}"))
}

async fn assert_silent(sub: &mut Subscription, what: &str) {
    if let Ok(Some(m)) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("{what}: unexpected message on {}", m.subject);
    }
}

/// Subscribers get what is published on their subject, in order.
pub async fn bus_publish_subscribe(bus: Arc<dyn Bus>) {
    let mut sub = subscribe(&*bus, "conf.pubsub").await;
    let mut other = subscribe(&*bus, "conf.other").await;
    for i in 0..5 {
        bus.publish(Message::new("conf.pubsub", format!("m{i}")))
            .await
            .expect("publish");
    }
    bus.flush().await.expect("flush");
    for i in 0..5 {
        let m = next_msg(&mut sub, "published message").await;
        assert_eq!(
            (m.subject.as_str(), &m.payload[..]),
            ("conf.pubsub", format!("m{i}").as_bytes())
        );
    }
    assert_silent(&mut other, "another subject").await;
}

/// `*` matches one token, `>` one or more trailing tokens.
pub async fn bus_wildcards(bus: Arc<dyn Bus>) {
    let mut star = subscribe(&*bus, "conf.w.*.x").await;
    let mut tail = subscribe(&*bus, "conf.w.>").await;
    for subject in ["conf.w.a.x", "conf.w.b.y", "conf.w.a.x.z", "conf.w"] {
        bus.publish(Message::new(subject, "p"))
            .await
            .expect("publish");
    }
    bus.flush().await.expect("flush");
    assert_eq!(next_msg(&mut star, "star").await.subject, "conf.w.a.x");
    assert_silent(&mut star, "star matches one token only").await;
    for want in ["conf.w.a.x", "conf.w.b.y", "conf.w.a.x.z"] {
        assert_eq!(next_msg(&mut tail, "gt").await.subject, want);
    }
    assert_silent(&mut tail, "gt needs at least one token").await;
}

async fn drain(sub: &mut Subscription) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(QUIET, sub.next()).await {
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    got
}

/// A queue group gets each message once (on one member); every group and
/// every plain subscriber gets its own copy.
pub async fn bus_queue_groups(bus: Arc<dyn Bus>) {
    let subject = "conf.queue";
    let mut g1 = Vec::new();
    for _ in 0..3 {
        g1.push(
            bus.queue_subscribe(subject, "workers")
                .await
                .expect("queue_subscribe"),
        );
    }
    let mut g2 = bus
        .queue_subscribe(subject, "auditors")
        .await
        .expect("queue_subscribe");
    let mut plain = subscribe(&*bus, subject).await;
    let sent: Vec<String> = (0..30).map(|i| format!("job-{i}")).collect();
    for body in &sent {
        bus.publish(Message::new(subject, body.clone()))
            .await
            .expect("publish");
    }
    bus.flush().await.expect("flush");
    let mut got1 = Vec::new();
    for member in &mut g1 {
        got1.extend(drain(member).await);
    }
    got1.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got1, want, "each message exactly once in the group");
    assert_eq!(drain(&mut g2).await, sent, "the second group gets all");
    assert_eq!(drain(&mut plain).await, sent, "plain subscribers get all");
}

/// A request gets the responder's reply, headers included.
pub async fn bus_request_reply(bus: Arc<dyn Bus>) {
    let mut service = subscribe(&*bus, "conf.svc.*").await;
    let responder = bus.clone();
    let task = tokio::spawn(async move {
        while let Some(req) = service.next().await {
            let reply_to = req.reply.clone().expect("a request has a reply subject");
            let mut body = b"echo:".to_vec();
            body.extend_from_slice(&req.payload);
            let reply =
                Message::new(reply_to, body).with_header("X-Served-By", req.subject.clone());
            responder.publish(reply).await.expect("reply");
        }
    });
    for i in 0..3 {
        let req = Message::new(format!("conf.svc.s{i}"), format!("q{i}")).with_header("X-Req", "1");
        let reply = bus.request(req, WAIT).await.expect("request");
        assert_eq!(&reply.payload[..], format!("echo:q{i}").as_bytes());
        assert_eq!(
            reply.header("x-served-by"),
            Some(format!("conf.svc.s{i}").as_str())
        );
    }
    task.abort();
}

/// A request nobody answers in time is [`BusError::Timeout`].
pub async fn bus_request_timeout(bus: Arc<dyn Bus>) {
    let _silent = subscribe(&*bus, "conf.slow").await;
    let timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    match bus.request(Message::new("conf.slow", "q"), timeout).await {
        Err(BusError::Timeout {
            subject,
            timeout: t,
        }) => {
            assert_eq!((subject.as_str(), t), ("conf.slow", timeout));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= timeout, "waited the full timeout");
    assert!(started.elapsed() < WAIT, "but not much longer");
}

/// A request on a subject without subscribers fails at once.
pub async fn bus_no_responders(bus: Arc<dyn Bus>) {
    let started = std::time::Instant::now();
    match bus
        .request(Message::new("conf.nobody.home", "q"), WAIT)
        .await
    {
        Err(BusError::NoResponders(subject)) => assert_eq!(subject, "conf.nobody.home"),
        other => panic!("expected no responders, got {other:?}"),
    }
    assert!(
        started.elapsed() < WAIT / 2,
        "at once, not after the timeout"
    );
}

/// Headers arrive as they were sent.
pub async fn bus_preserves_headers(bus: Arc<dyn Bus>) {
    let mut sub = subscribe(&*bus, "conf.headers").await;
    let msg = Message::new("conf.headers", "{}")
        .with_header("Content-Type", "application/json")
        .with_header("Nats-Msg-Id", "cmd-42")
        .with_header("X-Custom", "a value with spaces");
    bus.publish(msg.clone()).await.expect("publish");
    let got = next_msg(&mut sub, "message with headers").await;
    for (name, value) in &msg.headers {
        assert_eq!(got.header(name), Some(value.as_str()), "header {name}");
    }
    assert_eq!(got.payload, msg.payload);
}

/// Subjects and patterns NATS would refuse are [`BusError::InvalidSubject`].
pub async fn bus_rejects_invalid_subjects(bus: Arc<dyn Bus>) {
    for subject in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
        let published = bus.publish(Message::new(subject, "x")).await;
        assert!(
            matches!(published, Err(BusError::InvalidSubject(_))),
            "publish {subject:?}: {published:?}"
        );
        let requested = bus.request(Message::new(subject, "x"), QUIET).await;
        assert!(
            matches!(requested, Err(BusError::InvalidSubject(_))),
            "request {subject:?}: {requested:?}"
        );
    }
    for pattern in ["", "a.>.b", "a..b", "a b"] {
        let sub = bus.subscribe(pattern).await.err();
        assert!(
            matches!(sub, Some(BusError::InvalidSubject(_))),
            "subscribe {pattern:?}: {sub:?}"
        );
    }
}

/// Gives the lease checks a store.
#[async_trait]
pub trait LeaseFixture: Send + Sync {
    /// A handle on the fixture's one store of leases. A provider for many
    /// processes gives a new connection on each call, so that handles stand
    /// for separate replicas.
    async fn leases(&self) -> Arc<dyn LeaseStore>;
}

/// A long ttl: no check outlives it.
const LONG_TTL: Duration = Duration::from_secs(600);
/// A short ttl, for checks that wait for a lease to expire.
const SHORT_TTL: Duration = Duration::from_millis(200);

/// A lease name no other check uses.
fn lease_name(what: &str) -> String {
    format!("conf/{what}.{}", uuid::Uuid::new_v4().simple())
}

async fn acquire(leases: &dyn LeaseStore, name: &str, holder: &str, ttl: Duration) -> LeaseState {
    within("acquire", leases.acquire(name, holder, ttl))
        .await
        .unwrap_or_else(|e| panic!("acquire {name} for {holder}: {e}"))
}

async fn current(leases: &dyn LeaseStore, name: &str) -> Option<Lease> {
    within("holder", leases.holder(name))
        .await
        .unwrap_or_else(|e| panic!("holder of {name}: {e}"))
}

async fn release(leases: &dyn LeaseStore, name: &str, holder: &str) -> bool {
    within("release", leases.release(name, holder))
        .await
        .unwrap_or_else(|e| panic!("release {name} by {holder}: {e}"))
}

/// Sleeps until the wall clock, which leases expire by, is past `lease`'s
/// expiry.
async fn outlive(lease: &Lease) {
    while lease.is_valid_at(wall_clock_ms()) {
        tokio::time::sleep(lease.remaining_at(wall_clock_ms()) + Duration::from_millis(5)).await;
    }
}

/// While a lease is valid, another holder is refused and told who holds it
/// until when; its holder renews it.
pub async fn lease_is_exclusive(fx: &mut impl LeaseFixture) {
    let (a, b) = (fx.leases().await, fx.leases().await);
    let name = lease_name("exclusive");
    assert_eq!(current(&*a, &name).await, None, "a new lease is free");
    let taken = acquire(&*a, &name, "a", LONG_TTL).await;
    assert!(taken.acquired, "a free lease is taken");
    assert_eq!(taken.lease.holder, "a");
    let refused = acquire(&*b, &name, "b", LONG_TTL).await;
    assert_eq!(
        refused,
        LeaseState {
            lease: taken.lease.clone(),
            acquired: false
        },
        "b is refused and told a's lease"
    );
    assert_eq!(current(&*b, &name).await, Some(taken.lease.clone()));
    assert!(
        acquire(&*a, &name, "a", LONG_TTL).await.acquired,
        "a renews"
    );
}

/// Renewing moves the expiry to a ttl from the renewal: the lease outlives
/// its first expiry.
pub async fn lease_renewal_extends(fx: &mut impl LeaseFixture) {
    let (a, b) = (fx.leases().await, fx.leases().await);
    let name = lease_name("renewal");
    let first = acquire(&*a, &name, "a", SHORT_TTL).await;
    assert!(first.acquired);
    let renewed = acquire(&*a, &name, "a", LONG_TTL).await;
    assert!(renewed.acquired, "the holder renews");
    assert_eq!(renewed.lease.holder, "a");
    assert!(
        renewed.lease.expires_at_ms > first.lease.expires_at_ms,
        "{renewed:?} expires after {first:?}"
    );
    outlive(&first.lease).await;
    let refused = acquire(&*b, &name, "b", LONG_TTL).await;
    assert_eq!(
        (refused.acquired, refused.lease),
        (false, renewed.lease.clone()),
        "past the first expiry the renewed lease still holds"
    );
}

/// An expired lease is free: nobody holds it, and the next acquirer takes it.
pub async fn lease_is_taken_over_after_expiry(fx: &mut impl LeaseFixture) {
    let (a, b) = (fx.leases().await, fx.leases().await);
    let name = lease_name("expiry");
    let first = acquire(&*a, &name, "a", SHORT_TTL).await;
    assert!(first.acquired);
    outlive(&first.lease).await;
    assert_eq!(current(&*b, &name).await, None, "an expired lease is free");
    let taken = acquire(&*b, &name, "b", LONG_TTL).await;
    assert!(taken.acquired, "b takes the expired lease");
    assert_eq!(taken.lease.holder, "b");
    assert_eq!(current(&*a, &name).await, Some(taken.lease.clone()));
    let late = acquire(&*a, &name, "a", LONG_TTL).await;
    assert_eq!(
        (late.acquired, late.lease),
        (false, taken.lease),
        "the old holder cannot renew what b took"
    );
    assert!(!release(&*a, &name, "a").await, "nor release it");
}

/// A release by the holder frees the lease at once for another.
pub async fn lease_release_frees_it_at_once(fx: &mut impl LeaseFixture) {
    let (a, b) = (fx.leases().await, fx.leases().await);
    let name = lease_name("release");
    assert!(acquire(&*a, &name, "a", LONG_TTL).await.acquired);
    assert!(release(&*a, &name, "a").await, "the holder releases");
    assert_eq!(current(&*b, &name).await, None, "a released lease is free");
    let taken = acquire(&*b, &name, "b", LONG_TTL).await;
    assert!(taken.acquired, "b takes it without waiting for the ttl");
    assert_eq!(taken.lease.holder, "b");
    assert!(!release(&*a, &name, "a").await, "released twice: no-op");
}

/// A release by anyone but the holder (or of a free lease) changes nothing.
pub async fn lease_release_by_another_changes_nothing(fx: &mut impl LeaseFixture) {
    let (a, b) = (fx.leases().await, fx.leases().await);
    let name = lease_name("foreign-release");
    assert!(
        !release(&*b, &name, "b").await,
        "a free lease: nothing to release"
    );
    let taken = acquire(&*a, &name, "a", LONG_TTL).await;
    assert!(!release(&*b, &name, "b").await, "b does not hold it");
    assert_eq!(current(&*b, &name).await, Some(taken.lease.clone()));
    let refused = acquire(&*b, &name, "b", LONG_TTL).await;
    assert_eq!((refused.acquired, refused.lease), (false, taken.lease));
}

/// How many handles race for one lease.
const RACERS: usize = 8;

/// `RACERS` handles, each its own holder, acquire `name` at once: exactly
/// one wins, and every loser is told the winner, which is returned.
async fn race(fx: &impl LeaseFixture, name: &str, round: usize, ttl: Duration) -> Lease {
    let mut handles = Vec::new();
    for _ in 0..RACERS {
        handles.push(fx.leases().await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, leases)| {
            let (start, name) = (start.clone(), name.to_string());
            tokio::spawn(async move {
                start.wait().await;
                leases.acquire(&name, &format!("r{round}-{i}"), ttl).await
            })
        })
        .collect();
    let mut states = Vec::new();
    for task in tasks {
        let state = within("a racer", task).await.expect("racer task");
        states.push(state.unwrap_or_else(|e| panic!("racer: {e}")));
    }
    let winners: Vec<_> = states.iter().filter(|s| s.acquired).collect();
    assert_eq!(winners.len(), 1, "round {round}: one winner of {states:?}");
    let winner = winners[0].lease.clone();
    for state in &states {
        assert_eq!(state.lease, winner, "round {round}: all see the winner");
    }
    winner
}

/// Racers for a free lease, then for an expired one: one winner each time.
pub async fn lease_race_has_one_winner(fx: &mut impl LeaseFixture) {
    let name = lease_name("race");
    let first = race(fx, &name, 1, SHORT_TTL).await;
    let leases = fx.leases().await;
    assert_eq!(current(&*leases, &name).await, Some(first.clone()));
    outlive(&first).await;
    let second = race(fx, &name, 2, LONG_TTL).await;
    assert_eq!(current(&*leases, &name).await, Some(second));
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, LeaseError>, field: &str, what: &str) {
    match result {
        Err(LeaseError::Invalid { field: f, reason }) => {
            assert_eq!(f, field, "{what}: {reason}");
            assert!(!reason.is_empty(), "{what}: a reason");
        }
        other => panic!("{what}: expected an invalid {field}, got {other:?}"),
    }
}

/// Names that are not NATS KV keys, empty holders and ttls under a
/// millisecond are refused naming the argument, and change nothing.
pub async fn lease_refuses_bad_input(fx: &mut impl LeaseFixture) {
    let leases = fx.leases().await;
    for bad in [
        "",
        "a b",
        ".a",
        "a.",
        "a..b",
        "a*",
        "a>",
        "lease\u{e9}",
        "a\n",
    ] {
        let what = format!("name {bad:?}");
        assert_invalid(leases.acquire(bad, "a", LONG_TTL).await, "name", &what);
        assert_invalid(leases.release(bad, "a").await, "name", &what);
        assert_invalid(leases.holder(bad).await, "name", &what);
    }
    let long = "x".repeat(crate::lease::MAX_NAME_LEN + 1);
    assert_invalid(leases.holder(&long).await, "name", "a long name");
    let name = lease_name("bad-input");
    assert_invalid(leases.acquire(&name, "", LONG_TTL).await, "holder", "empty");
    assert_invalid(leases.release(&name, "").await, "holder", "empty");
    for ttl in [Duration::ZERO, Duration::from_micros(999)] {
        assert_invalid(leases.acquire(&name, "a", ttl).await, "ttl", "short");
    }
    assert_eq!(current(&*leases, &name).await, None, "nothing was taken");
    for good in ["study-runs", "A/b.c_d=e-1"] {
        let name = format!("{good}.{}", uuid::Uuid::new_v4().simple());
        assert!(
            acquire(&*leases, &name, "a", LONG_TTL).await.acquired,
            "{good}"
        );
    }
}

/// Generates one `#[tokio::test]` per conformance check, so every backend's
/// test file runs the same list. `$fixture` is an async expression giving a
/// fresh [`LogFixture`]; `$bus` one giving `(guard, Arc<dyn Bus>)`, where the
/// guard (a server, or `()`) lives as long as the test; `$leases` one giving
/// a fresh [`LeaseFixture`].
#[macro_export]
macro_rules! conformance_tests {
    (log: $fixture:expr, bus: $bus:expr, leases: $leases:expr $(,)?) => {
        $crate::conformance_tests!(@fixture $fixture;
            log_orders_each_stream, log_reads_all_in_global_order, log_rejects_wrong_expected_seq,
            log_appends_batches_all_or_nothing, log_deduplicates_retried_appends,
            log_reads_stream_from_seq, log_follows_new_events, log_lists_streams,
            log_handles_large_batches,
            log_stores_snapshots, log_survives_reopen, log_detects_corruption,
            log_checks_signatures);
        $crate::conformance_tests!(@bus $bus;
            bus_publish_subscribe, bus_wildcards, bus_queue_groups, bus_request_reply,
            bus_request_timeout, bus_no_responders, bus_preserves_headers,
            bus_rejects_invalid_subjects);
        $crate::conformance_tests!(@fixture $leases;
            lease_is_exclusive, lease_renewal_extends, lease_is_taken_over_after_expiry,
            lease_release_frees_it_at_once, lease_release_by_another_changes_nothing,
            lease_race_has_one_winner, lease_refuses_bad_input);
    };
    (@fixture $fixture:expr; $($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let mut fixture = $fixture;
            $crate::conformance::$name(&mut fixture).await;
        }
    )*};
    (@bus $bus:expr; $($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_guard, bus): (_, std::sync::Arc<dyn $crate::Bus>) = $bus;
            $crate::conformance::$name(bus).await;
        }
    )*};
}
