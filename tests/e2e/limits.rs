//! Amplification is bounded (issue 11, defect 3): a study may name at most
//! 256 parameters, one `ask` may sample at most 8,192 values (n x
//! parameters), and what one command writes and answers stays below the
//! event and batch limits (and, on NATS, below the server's `max_payload`),
//! refused with a typed error naming the field or setting.
//!
//! Before: a 2,000-parameter study and `ask` with `n: 1000` wrote one 53 MB
//! event and a 107 MB reply, held an unrelated study for 10 s, raised RSS by
//! 840 MB, and on NATS the oversized publish dropped the connection (other
//! clients lost 8 of 336 replies). Both backends run the same scenario
//! through the gateway, with a light study asked beside the heavy commands;
//! its latency is printed (it is reported, not asserted).

use crate::support::FlotillaUp;
use flotilla_bus::testing::NatsServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn study(parameters: usize) -> Value {
    let bounds: serde_json::Map<String, Value> = (0..parameters)
        .map(|i| (format!("p{i}"), json!({"min": 0.0, "max": 1.0})))
        .collect();
    json!({"type": "create_study", "seed": 1, "budget": 100000, "bounds": bounds})
}

/// The heaviest `ask` a 256-parameter study allows (n x parameters = 8,192).
const HEAVIEST_ASK: u32 = 32;

/// Refuses what is too wide, then runs the heaviest asks allowed beside
/// light ones (each answered `heavy_status`); returns the light latencies.
fn amplification_is_refused(up: &FlotillaUp, heavy_status: u16) -> Vec<Duration> {
    let (status, body) = up.send("solver", "wide", &study(2_000));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_FIELD");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("at most 256 parameters"), "{message}");

    assert_eq!(up.send("solver", "big", &study(256)).0, 200);
    assert_eq!(up.send("solver", "light", &study(2)).0, 200);
    let (status, body) = up.send("solver", "big", &json!({"type": "ask", "n": 1000}));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("n must be at most 32"), "{message}");

    let light = std::thread::scope(|scope| {
        let heavy = scope.spawn(|| {
            for _ in 0..5 {
                let ask = json!({"type": "ask", "n": HEAVIEST_ASK});
                let (status, body) = up.send("solver", "big", &ask);
                assert_eq!(status, heavy_status, "{body}");
                if status == 413 {
                    assert_eq!(body["error"]["code"], "TOO_LARGE");
                    let message = body["error"]["message"].as_str().unwrap();
                    assert!(message.contains("max_event_bytes"), "{message}");
                }
            }
        });
        let mut latencies = Vec::new();
        while !heavy.is_finished() {
            let started = Instant::now();
            let (status, body) = up.send("solver", "light", &json!({"type": "ask"}));
            latencies.push(started.elapsed());
            assert_eq!(status, 200, "a light command beside the heavy ones: {body}");
        }
        heavy.join().unwrap();
        latencies
    });
    // The wide study's state may be too big for one NATS message: then it
    // is refused, typed, and the connection (and everyone else) carries on.
    let (status, body) = up.get("/v1/query/solver/big");
    if status != 200 {
        assert_eq!(
            (status, &body["error"]["code"]),
            (413, &json!("TOO_LARGE")),
            "{body}"
        );
    }
    let (status, body) = up.get("/v1/query/solver/light");
    assert_eq!(status, 200, "{body}");
    light
}

fn report(backend: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{backend}: {} light asks beside 5 of the heaviest: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    );
}

#[test]
fn embedded_refuses_amplification_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A low event limit: the heaviest ask allowed is refused for its size.
    let up = FlotillaUp::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--max-event-bytes",
            "65536",
        ],
        dir.path(),
    );
    report("embedded", amplification_is_refused(&up, 413));
}

#[test]
fn nats_refuses_amplification_and_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let up = FlotillaUp::start(&["--nats", &nats.url()], dir.path());
    report("nats", amplification_is_refused(&up, 200));
    assert!(
        !up.log().contains("disconnected"),
        "the connection to NATS dropped:\n{}",
        up.log()
    );
}
