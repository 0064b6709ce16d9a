//! Reads of the NATS log leave no JetStream consumers behind (issue 11,
//! defect 1): on a real `nats-server -js`, recovering thousands of
//! aggregates, a burst of reads of one stream and a dropped following reader
//! keep the stream's consumer count small, and no read fails.
//!
//! `read_all_throughput` (ignored) prints the events/s of a `read_all` over
//! `FLOTILLA_BENCH_EVENTS` events (100,000 by default):
//! `cargo test -p flotilla-bus --test nats_consumers -- --ignored --nocapture`.

use flotilla_bus::conformance::events;
use flotilla_bus::nats::{JetStreamLog, NatsBus};
use flotilla_bus::testing::NatsServer;
use flotilla_bus::EventLog;
use flotilla_messages::Subjects;
use futures::{stream, StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many reads run at once when recovering many aggregates.
const RECOVERY_CONCURRENCY: usize = 64;
/// The most consumers a test tolerates on the stream.
const FEW_CONSUMERS: usize = 2;

async fn open(server: &NatsServer) -> Arc<JetStreamLog> {
    let bus = NatsBus::connect(&server.url()).await.expect("connect");
    let log = JetStreamLog::open(bus.client(), Subjects::default(), 1)
        .await
        .expect("open the JetStream log");
    Arc::new(log)
}

async fn consumer_count(log: &JetStreamLog) -> usize {
    let mut stream = log.jetstream_stream().clone();
    stream
        .info()
        .await
        .expect("stream info")
        .state
        .consumer_count
}

async fn assert_few_consumers(log: &JetStreamLog, after: &str) {
    let consumers = consumer_count(log).await;
    assert!(
        consumers <= FEW_CONSUMERS,
        "{consumers} consumers left after {after}"
    );
}

/// Every event of `stream`, read as a recovering aggregate does.
async fn recover(log: &JetStreamLog, stream: &str) -> usize {
    let read = log.read_stream(stream, 1).await.expect("read_stream");
    let got: Vec<_> = read.try_collect().await.expect("a clean read");
    got.len()
}

/// Runs `reads` at most `at_once` at a time; every one must succeed.
async fn all_succeed<F: std::future::Future<Output = usize>>(
    reads: impl Iterator<Item = F>,
    at_once: usize,
) -> Vec<usize> {
    stream::iter(reads)
        .buffer_unordered(at_once)
        .collect()
        .await
}

/// 5,000 aggregates appended to, then all recovered after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovering_many_aggregates_leaves_few_consumers() {
    let mut server = NatsServer::start();
    let names: Vec<String> = (0..5_000).map(|i| format!("solver/agg-{i}")).collect();
    let log = open(&server).await;
    let appends = names.iter().map(|name| {
        let log = log.clone();
        async move { log.append(name, 0, events(2)).await.expect("append").len() }
    });
    assert!(all_succeed(appends, RECOVERY_CONCURRENCY)
        .await
        .iter()
        .all(|n| *n == 2));
    drop(log);
    server.restart();
    let log = open(&server).await;
    let started = Instant::now();
    let reads = names.iter().map(|name| recover(&log, name));
    let counts = all_succeed(reads, RECOVERY_CONCURRENCY).await;
    println!("recovered 5,000 aggregates in {:.2?}", started.elapsed());
    assert!(counts.iter().all(|n| *n == 2), "every aggregate recovered");
    assert_few_consumers(&log, "5,000 recoveries").await;
}

/// 2,000 reads of one stream at once (a burst of retries): none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reads_of_one_stream_all_succeed() {
    let server = NatsServer::start();
    let log = open(&server).await;
    log.append("scheduler/hot", 0, events(20))
        .await
        .expect("append");
    let reads = (0..2_000).map(|_| recover(&log, "scheduler/hot"));
    let counts = all_succeed(reads, 2_000).await;
    assert!(counts.iter().all(|n| *n == 20), "every read got 20 events");
    assert_few_consumers(&log, "2,000 reads").await;
}

/// A following `read_all` holds at most one consumer, gone soon after it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_follower_leaves_no_consumer() {
    let server = NatsServer::start();
    let log = open(&server).await;
    log.append("health/live", 0, events(3))
        .await
        .expect("append");
    let mut live = log.read_all(1, true).await.expect("read_all follow");
    for _ in 0..3 {
        live.next().await.expect("open").expect("an event");
    }
    log.append("health/live", 3, events(1))
        .await
        .expect("append");
    let later = tokio::time::timeout(Duration::from_secs(5), live.next()).await;
    later.expect("followed in time").expect("open").expect("ok");
    assert!(consumer_count(&log).await <= 1, "one consumer per follower");
    drop(live);
    let deadline = Instant::now() + Duration::from_secs(3);
    while consumer_count(&log).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the dropped follower's consumer is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the events/s of a non-following `read_all` and of a `read_stream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn read_all_throughput() {
    let total: u64 = std::env::var("FLOTILLA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let server = NatsServer::start();
    let log = open(&server).await;
    let batch = 1_000;
    for seq in (0..total).step_by(batch as usize) {
        let n = batch.min(total - seq);
        log.append("solver/bench", seq, events(n))
            .await
            .expect("append");
    }
    let started = Instant::now();
    let all: Vec<_> = log
        .read_all(1, false)
        .await
        .expect("read_all")
        .try_collect()
        .await
        .expect("a clean read_all");
    report("read_all", all.len(), started.elapsed());
    let started = Instant::now();
    let one = recover(&log, "solver/bench").await;
    report("read_stream", one, started.elapsed());
    assert_eq!(all.len() as u64, total);
}

fn report(what: &str, events: usize, took: Duration) {
    let rate = events as f64 / took.as_secs_f64();
    println!("{what}: {events} events in {took:.2?} = {rate:.0} events/s");
}

/// Prints how long a following `read_all` takes to see an appended event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn follow_latency() {
    let server = NatsServer::start();
    let log = open(&server).await;
    let mut live = log.read_all(1, true).await.expect("read_all follow");
    let mut took = Vec::new();
    for seq in 0..50 {
        let started = Instant::now();
        log.append("health/beat", seq, events(1))
            .await
            .expect("append");
        live.next().await.expect("open").expect("an event");
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "follow: append to delivery median {:.2?}, max {:.2?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}
