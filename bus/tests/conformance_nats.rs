//! The conformance suite against the NATS backend: `NatsBus` and
//! `JetStreamLog` on a real `nats-server -js` (one per test), started by
//! `flotilla_bus::testing::NatsServer`. Reopening restarts the server with
//! SIGKILL on the same store; corrupting deletes a record and publishes a
//! forged copy with one payload byte changed, as a tampering attacker would.
//! Each handle on the leases is a connection of its own, as another
//! replica's would be.

use async_nats::HeaderMap;
use async_trait::async_trait;
use flotilla_bus::conformance::{self, LeaseFixture, LogFixture};
use flotilla_bus::nats::{
    JetStreamLog, NatsBus, NatsLeases, BATCH_BASE_HEADER, BATCH_END_HEADER, LEASE_BUCKET,
    SEQ_HEADER,
};
use flotilla_bus::testing::NatsServer;
use flotilla_bus::{seal_batch, Bus, EventLog, LeaseError, LeaseStore, LogError, LogKeys};
use flotilla_messages::{Envelope, Subjects};
use futures::StreamExt;
use std::sync::Arc;

/// A server, a connection and a log on it.
struct NatsFixture {
    server: NatsServer,
    client: async_nats::Client,
    log: Arc<JetStreamLog>,
}

impl NatsFixture {
    async fn start() -> Self {
        let server = NatsServer::start();
        let (client, log) = connect(&server).await;
        NatsFixture {
            server,
            client,
            log,
        }
    }
}

async fn connect(server: &NatsServer) -> (async_nats::Client, Arc<JetStreamLog>) {
    let bus = NatsBus::connect(&server.url()).await.expect("connect");
    let log = JetStreamLog::open(bus.client(), Subjects::default(), 1)
        .await
        .expect("open the JetStream log");
    (bus.client(), Arc::new(log))
}

#[async_trait]
impl LogFixture for NatsFixture {
    async fn log(&self) -> Arc<dyn EventLog> {
        self.log.clone()
    }

    async fn reopen(&mut self) -> Arc<dyn EventLog> {
        self.server.restart();
        let (client, log) = connect(&self.server).await;
        self.client = client;
        self.log = log;
        self.log.clone()
    }

    async fn corrupt(&mut self, stream: &str, seq: u64) {
        tamper(&self.client, &self.log, stream, seq).await;
    }

    async fn with_keys(&self, keys: LogKeys) -> Arc<dyn EventLog> {
        Arc::new((*self.log).clone().with_keys(keys))
    }
}

/// Replaces the record of (`stream`, `seq`) by a copy whose payload has one
/// byte changed (`tick` → `tock`), keeping its checksum and headers.
async fn tamper(client: &async_nats::Client, log: &JetStreamLog, stream: &str, seq: u64) {
    let js_seq = log
        .position_of(stream, seq)
        .await
        .expect("locate")
        .unwrap_or_else(|| panic!("no record for {stream} seq {seq}"));
    let original = log
        .jetstream_stream()
        .direct_get(js_seq)
        .await
        .expect("get the record");
    let mut body = original.payload.to_vec();
    let at = body
        .windows(4)
        .rposition(|w| w == b"tick")
        .expect("payload has tick");
    body[at + 1] = b'o';
    let mut headers = HeaderMap::new();
    for (name, values) in original.headers.iter() {
        let name = name.to_string();
        if name.starts_with("Flotilla-") || name == "Content-Type" {
            headers.insert(name.as_str(), values[0].as_str());
        }
    }
    headers.insert("Nats-Msg-Id", format!("forged-{stream}-{seq}").as_str());
    assert!(log
        .jetstream_stream()
        .delete_message(js_seq)
        .await
        .expect("delete"));
    let js = async_nats::jetstream::new(client.clone());
    let subject = original.subject.to_string();
    js.publish_with_headers(subject, headers, body.into())
        .await
        .expect("publish forged")
        .await
        .expect("forged ack");
}

/// A server whose lease handles are each a connection of their own.
struct LeasesFixture {
    server: NatsServer,
}

#[async_trait]
impl LeaseFixture for LeasesFixture {
    /// Opens the bucket on first use, as a backend's leases do (so the
    /// first handles of a race also race to create it).
    async fn leases(&self) -> Arc<dyn LeaseStore> {
        let bus = NatsBus::connect(&self.server.url()).await.expect("connect");
        let js = async_nats::jetstream::new(bus.client());
        Arc::new(NatsLeases::new(js, 1))
    }
}

/// Leases on a new connection to `server`.
async fn leases_on(server: &NatsServer) -> Arc<NatsLeases> {
    let bus = NatsBus::connect(&server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(bus.client());
    Arc::new(
        NatsLeases::open(js, 1)
            .await
            .expect("open the lease bucket"),
    )
}

flotilla_bus::conformance_tests!(
    log: NatsFixture::start().await,
    bus: {
        let server = NatsServer::start();
        let bus = NatsBus::connect(&server.url()).await.expect("connect");
        (server, Arc::new(bus))
    },
    leases: LeasesFixture { server: NatsServer::start() },
);

/// Publishes the first record of a two-event batch and stops, as a writer
/// killed mid-batch would; returns the orphan's envelope.
async fn publish_half_batch(fx: &NatsFixture, stream: &str, ids: [&str; 2]) -> Envelope {
    let head = fx.log.head(stream).await.expect("head");
    let base = fx
        .log
        .position_of(stream, head.seq)
        .await
        .expect("locate")
        .unwrap_or(0);
    let batch = vec![conformance::event(ids[0], 3), conformance::event(ids[1], 4)];
    let sealed = seal_batch(stream, &head, batch, None);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", ids[0]);
    headers.insert(SEQ_HEADER, sealed[0].seq.to_string().as_str());
    headers.insert(BATCH_END_HEADER, sealed[1].seq.to_string().as_str());
    headers.insert(BATCH_BASE_HEADER, base.to_string().as_str());
    let subject = Subjects::default().event(&stream.parse().expect("name"));
    let body = serde_json::to_vec(&sealed[0]).expect("json");
    let js = async_nats::jetstream::new(fx.client.clone());
    js.publish_with_headers(subject, headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    sealed[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_short_is_invisible_and_replaced_by_its_retry() {
    let fx = NatsFixture::start().await;
    let s = "solver/crash";
    let first = fx
        .log
        .append(s, 0, conformance::events(2))
        .await
        .expect("append");
    publish_half_batch(&fx, s, ["half-a", "half-b"]).await;
    assert_eq!(
        fx.log.head(s).await.expect("head").seq,
        2,
        "the orphan is not there"
    );
    let read = conformance::collect(fx.log.read_stream(s, 1).await.expect("read")).await;
    assert_eq!(read.expect("clean"), first);
    let all = fx.log.read_all(1, false).await.expect("read_all");
    let all: Vec<_> = all.collect::<Vec<_>>().await;
    assert_eq!(all.len(), 2, "read_all skips the orphan: {all:?}");
    let retry = vec![
        conformance::event("half-a", 3),
        conformance::event("half-b", 4),
    ];
    let stored = fx.log.append(s, 2, retry).await.expect("the retried batch");
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    let read = conformance::collect(fx.log.read_stream(s, 1).await.expect("read")).await;
    let read = read.expect("clean");
    assert_eq!(read.len(), 4);
    assert_eq!(read[2..].to_vec(), stored);
    let all: Vec<_> = fx
        .log
        .read_all(1, false)
        .await
        .expect("read_all")
        .collect::<Vec<_>>()
        .await;
    assert_eq!(all.len(), 4, "the orphan was removed: {all:?}");
}

/// An orphan followed by another writer's events at the same seqs (the
/// killed writer's batch is never retried): a read that starts anywhere
/// after the orphan's seq anchors on the committed record of the seq
/// before it, never on the orphan (which made recovery of `provisioner/gpu`
/// fail with "seq 13: found an event claiming seq 12").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_any_seq_steps_over_an_orphan_of_the_seq_before() {
    let fx = NatsFixture::start().await;
    let s = "provisioner/gpu";
    let mut log = fx
        .log
        .append(s, 0, conformance::events(2))
        .await
        .expect("append");
    publish_half_batch(&fx, s, ["orphan-a", "orphan-b"]).await;
    log.extend(
        fx.log
            .append(s, 2, conformance::events(1))
            .await
            .expect("seq 3"),
    );
    log.extend(
        fx.log
            .append(s, 3, conformance::events(2))
            .await
            .expect("seqs 4-5"),
    );
    for from in 1..=6u64 {
        let read = conformance::collect(fx.log.read_stream(s, from).await.expect("read")).await;
        let read = read.unwrap_or_else(|e| panic!("read from seq {from}: {e}"));
        assert_eq!(
            read,
            log[from as usize - 1..].to_vec(),
            "read from seq {from}"
        );
    }
    assert_eq!(
        fx.log.position_of(s, 3).await.expect("locate"),
        Some(4),
        "seq 3 is the record after the orphan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_publish_on_an_event_subject_is_not_a_record() {
    let fx = NatsFixture::start().await;
    let s = "scheduler/copies";
    let first = fx
        .log
        .append(s, 0, conformance::events(2))
        .await
        .expect("append");
    let bus = NatsBus::from_client(fx.client.clone());
    let subject = Subjects::default().event(&s.parse().expect("name"));
    for env in &first {
        let body = serde_json::to_vec(env).expect("json");
        bus.publish(flotilla_bus::Message::new(subject.clone(), body))
            .await
            .expect("publish");
    }
    bus.flush().await.expect("flush");
    assert_eq!(fx.log.head(s).await.expect("head").seq, 2);
    let next = fx
        .log
        .append(s, 2, conformance::events(1))
        .await
        .expect("append");
    let read = conformance::collect(fx.log.read_stream(s, 1).await.expect("read")).await;
    let read = read.expect("clean");
    assert_eq!(read.len(), 3);
    assert_eq!(read[2], next[0]);
}

/// A snapshot larger than the server's max payload is stored in parts and
/// read back whole; the connection survives, and a smaller one replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_larger_than_a_message_are_stored_in_parts() {
    let fx = NatsFixture::start().await;
    let big = flotilla_bus::Snapshot {
        seq: 7,
        checksum: "ab".repeat(32),
        state: (0..3_500_000u32).map(|i| (i % 251) as u8).collect(),
    };
    fx.log
        .save_snapshot("solver/big", big.clone())
        .await
        .expect("save a big snapshot");
    assert_eq!(
        fx.log.load_snapshot("solver/big").await.expect("load"),
        Some(big)
    );
    let small = flotilla_bus::Snapshot {
        seq: 9,
        checksum: "cd".repeat(32),
        state: b"small".to_vec(),
    };
    fx.log
        .save_snapshot("solver/big", small.clone())
        .await
        .expect("save");
    assert_eq!(
        fx.log.load_snapshot("solver/big").await.expect("load"),
        Some(small)
    );
    fx.log
        .append("solver/big", 0, conformance::events(1))
        .await
        .expect("still connected");
}

/// Anyone can publish on an event subject: a stray body or a bare copy of
/// an older envelope changes neither the head nor what is read, and appends
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_publishes_on_an_event_subject_change_nothing() {
    let fx = NatsFixture::start().await;
    let bus = NatsBus::from_client(fx.client.clone());
    let s = "scheduler/strays";
    let stored = fx
        .log
        .append(s, 0, conformance::events(2))
        .await
        .expect("append");
    let subject = Subjects::default().event(&s.parse().expect("name"));
    for body in [
        serde_json::to_vec(&stored[0]).expect("json"),
        b"hello".to_vec(),
    ] {
        bus.publish(flotilla_bus::Message::new(subject.clone(), body))
            .await
            .expect("publish");
    }
    bus.flush().await.expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(fx.log.head(s).await.expect("head").seq, 2);
    let next = fx
        .log
        .append(s, 2, conformance::events(1))
        .await
        .expect("append after strays");
    assert_eq!(next[0].seq, 3);
    let read = conformance::collect(fx.log.read_stream(s, 1).await.expect("read")).await;
    assert_eq!(read.expect("clean").len(), 3);
}

/// A forged record claiming to start an unfinished batch may make appends
/// conflict, but never removes a stored event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_batch_headers_never_delete_history() {
    let fx = NatsFixture::start().await;
    let s = "solver/victim";
    let stored = fx
        .log
        .append(s, 0, conformance::events(3))
        .await
        .expect("append");
    let subject = Subjects::default().event(&s.parse().expect("name"));
    let mut headers = HeaderMap::new();
    headers.insert(BATCH_END_HEADER, "99");
    headers.insert(BATCH_BASE_HEADER, "0");
    headers.insert(SEQ_HEADER, "3");
    let js = async_nats::jetstream::new(fx.client.clone());
    js.publish_with_headers(
        subject,
        headers,
        serde_json::to_vec(&stored[2]).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    for expected in [3, 0] {
        match fx.log.append(s, expected, conformance::events(1)).await {
            Err(LogError::Corrupt(e)) => assert_eq!(e.location(), (s, 3), "{e}"),
            other => panic!("an append over forged headers must fail as Corrupt: {other:?}"),
        }
    }
    let read = conformance::collect(fx.log.read_stream(s, 1).await.expect("read"))
        .await
        .expect("the stored events still read");
    assert_eq!(read, stored, "nothing stored was removed or forked");
}

const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// A lease written before a restart of the server holds after it, for a
/// new connection (refused) and for its holder's own, reconnected one
/// (which renews it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_survives_a_server_restart() {
    let mut server = NatsServer::start();
    let a = leases_on(&server).await;
    let taken = a.acquire("driver", "a", LEASE_TTL).await.expect("acquire");
    assert!(taken.acquired);
    server.restart();
    let b = leases_on(&server).await;
    assert_eq!(
        b.holder("driver").await.expect("holder"),
        Some(taken.lease.clone())
    );
    let refused = b.acquire("driver", "b", LEASE_TTL).await.expect("acquire");
    assert_eq!((refused.acquired, refused.lease), (false, taken.lease));
    let renewed = until_reconnected(|| a.acquire("driver", "a", LEASE_TTL)).await;
    assert!(
        renewed.acquired,
        "the holder renews on its reconnected connection"
    );
    assert_eq!(
        b.holder("driver").await.expect("holder"),
        Some(renewed.lease)
    );
}

/// `op`'s first success, trying again while the connection is down.
async fn until_reconnected<T, F>(op: impl Fn() -> F) -> T
where
    F: std::future::Future<Output = Result<T, LeaseError>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet reconnected: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still failing after a restart: {e}"),
        }
    }
}

/// Two connections, as two processes: both see one holder, and a release
/// on one lets the other take the lease at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_see_one_holder() {
    let server = NatsServer::start();
    let (a, b) = (leases_on(&server).await, leases_on(&server).await);
    let taken = a.acquire("driver", "a", LEASE_TTL).await.expect("acquire");
    assert!(taken.acquired);
    for leases in [&a, &b] {
        assert_eq!(
            leases.holder("driver").await.expect("holder"),
            Some(taken.lease.clone())
        );
    }
    assert!(
        !b.acquire("driver", "b", LEASE_TTL)
            .await
            .expect("acquire")
            .acquired
    );
    assert!(a.release("driver", "a").await.expect("release"));
    let took_over = b.acquire("driver", "b", LEASE_TTL).await.expect("acquire");
    assert!(took_over.acquired, "b takes it at once");
    assert_eq!(
        a.holder("driver").await.expect("holder"),
        Some(took_over.lease)
    );
}

/// The bucket, read and written beside the store, as an operator would.
async fn raw_bucket(server: &NatsServer) -> async_nats::jetstream::kv::Store {
    let bus = NatsBus::connect(&server.url()).await.expect("connect");
    async_nats::jetstream::new(bus.client())
        .get_key_value(LEASE_BUCKET)
        .await
        .expect("the lease bucket")
}

/// A lease whose key was deleted or purged (by an operator) is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_purged_lease_is_free() {
    let server = NatsServer::start();
    let leases = leases_on(&server).await;
    let kv = raw_bucket(&server).await;
    assert!(
        leases
            .acquire("driver", "a", LEASE_TTL)
            .await
            .expect("acquire")
            .acquired
    );
    kv.delete("driver").await.expect("delete");
    assert_eq!(leases.holder("driver").await.expect("holder"), None);
    let b = leases
        .acquire("driver", "b", LEASE_TTL)
        .await
        .expect("acquire");
    assert!(b.acquired, "taken after a delete");
    kv.purge("driver").await.expect("purge");
    assert_eq!(leases.holder("driver").await.expect("holder"), None);
    let c = leases
        .acquire("driver", "c", LEASE_TTL)
        .await
        .expect("acquire");
    assert!(c.acquired, "taken after a purge");
    assert_eq!(
        leases.holder("driver").await.expect("holder"),
        Some(c.lease)
    );
}

/// A value that is not a lease is reported naming the lease, and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_not_a_lease_is_refused_and_kept() {
    let server = NatsServer::start();
    let leases = leases_on(&server).await;
    let kv = raw_bucket(&server).await;
    kv.put("driver", "not json".into()).await.expect("put");
    for result in [
        leases.acquire("driver", "a", LEASE_TTL).await.map(|_| ()),
        leases.holder("driver").await.map(|_| ()),
        leases.release("driver", "a").await.map(|_| ()),
    ] {
        assert!(
            matches!(&result, Err(LeaseError::Corrupt { name, .. }) if name == "driver"),
            "{result:?}"
        );
    }
    let kept = kv.get("driver").await.expect("get");
    assert_eq!(kept.as_deref(), Some(&b"not json"[..]));
}

/// The bucket keeps one value per lease, on file, with the replicas asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_bucket_keeps_one_value_per_key_on_file() {
    let server = NatsServer::start();
    let _leases = leases_on(&server).await;
    let mut stream = async_nats::jetstream::new(
        NatsBus::connect(&server.url())
            .await
            .expect("connect")
            .client(),
    )
    .get_stream(format!("KV_{LEASE_BUCKET}"))
    .await
    .expect("the bucket's stream");
    let config = stream.info().await.expect("info").config.clone();
    assert_eq!(config.max_messages_per_subject, 1);
    assert_eq!(config.num_replicas, 1);
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
}
