//! Two `flotilla up --nats` hosts of the solver at full load (issue 11,
//! defect 1): 6,000 asks over 20 studies, 64 in flight at once, shared by
//! the two hosts' queue group, so both host every study and lose append
//! races to each other all the time. Before reads used direct gets, every
//! catch-up opened a JetStream consumer and 3,218 of 6,000 asks came back
//! `UNAVAILABLE` (the stream's 1,000-consumer cap); now none may, no trial
//! is handed out twice, and the stream keeps no consumers.

use crate::support::FlotillaUp;
use flotilla_bus::nats::{JetStreamLog, NatsBus};
use flotilla_bus::testing::NatsServer;
use flotilla_bus::{Bus, Message};
use flotilla_messages::Subjects;
use futures::{stream, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const STUDIES: usize = 20;
const ASKS: usize = 6_000;
const IN_FLIGHT: usize = 64;

/// One NATS request; the reply as JSON.
async fn request(bus: &NatsBus, subject: String, body: &Value) -> Value {
    let msg = Message::new(subject, serde_json::to_vec(body).unwrap())
        .with_header("Content-Type", "application/json");
    let reply = bus
        .request(msg, Duration::from_secs(60))
        .await
        .expect("a reply within 60 s");
    serde_json::from_slice(&reply.payload).expect("a JSON reply")
}

#[test]
fn two_hosts_at_full_load_answer_every_ask() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let _a = FlotillaUp::start(&["--nats", &url, "--only", "solver"], dir.path());
    let _b = FlotillaUp::start(&["--nats", &url, "--only", "solver"], dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = NatsBus::connect(&url).await.unwrap();
        for s in 0..STUDIES {
            let create = json!({"type": "create_study", "seed": s, "budget": ASKS,
                "sampler": "random", "bounds": {"x": {"min": 0, "max": 1}}});
            let reply = request(&bus, format!("flotilla.cmd.solver.load-{s}"), &create).await;
            assert_eq!(reply["ok"], true, "{reply}");
        }
        let asks = (0..ASKS).map(|i| {
            let bus = &bus;
            async move {
                let subject = format!("flotilla.cmd.solver.load-{}", i % STUDIES);
                (
                    i % STUDIES,
                    request(bus, subject, &json!({"type": "ask", "n": 1})).await,
                )
            }
        });
        let started = std::time::Instant::now();
        let replies: Vec<(usize, Value)> = stream::iter(asks)
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let took = started.elapsed();
        eprintln!(
            "{ASKS} asks on two hosts in {took:.1?} ({:.0}/s)",
            ASKS as f64 / took.as_secs_f64()
        );

        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        let mut trials: BTreeSet<(usize, String)> = BTreeSet::new();
        for (study, reply) in &replies {
            if reply["ok"] == true {
                for t in reply["result"]["trials"].as_array().unwrap() {
                    let id = t["trial_id"].as_str().unwrap().to_string();
                    assert!(trials.insert((*study, id)), "trial handed out twice: {t}");
                }
            } else {
                let code = reply["error"]["code"].as_str().unwrap_or("?").to_string();
                eprintln!("study {study}: {reply}");
                *errors.entry(code).or_default() += 1;
            }
        }
        assert_eq!(
            errors.get("UNAVAILABLE"),
            None,
            "errors by code: {errors:?}"
        );
        assert!(errors.is_empty(), "errors by code: {errors:?}");
        assert_eq!(trials.len(), ASKS);

        let log = JetStreamLog::open(bus.client(), Subjects::default(), 1)
            .await
            .unwrap();
        let mut events = log.jetstream_stream().clone();
        let consumers = events.info().await.unwrap().state.consumer_count;
        assert!(consumers <= 2, "{consumers} consumers on the events stream");
    });
}
