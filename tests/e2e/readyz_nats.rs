//! `/readyz` tells the truth about NATS (issue 11, defect 7): while the
//! control plane's NATS connection is down it answers 503 `unavailable`
//! with the reason, and 200 again once the connection is back. Before, it
//! stayed 200 with the server gone.

use crate::support::{http_client, FlotillaUp};
use flotilla_bus::testing::NatsServer;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A generous bound for a change of state to show; the test polls.
const WITHIN: Duration = Duration::from_secs(60);

/// `/readyz`'s status and body, or `None` while nothing answers.
fn readyz(up: &FlotillaUp) -> Option<(u16, Value)> {
    let reply = http_client()
        .get(format!("{}/readyz", up.url))
        .send()
        .ok()?;
    let status = reply.status().as_u16();
    Some((status, reply.json().unwrap_or(Value::Null)))
}

/// Polls `/readyz` until it answers `status`; panics with the log after [`WITHIN`].
fn wait_for(up: &FlotillaUp, status: u16) -> Value {
    let started = Instant::now();
    loop {
        match readyz(up) {
            Some((s, body)) if s == status => return body,
            seen => assert!(
                started.elapsed() < WITHIN,
                "/readyz never answered {status} (last: {seen:?}):\n{}",
                up.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readyz_is_unavailable_while_nats_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start();
    let up = FlotillaUp::start(&["--nats", &nats.url()], dir.path());
    assert_eq!(wait_for(&up, 200)["status"], "ready");

    nats.kill();
    let down = wait_for(&up, 503);
    assert_eq!(down["status"], "unavailable", "{down}");
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("NATS"), "the reason names NATS: {down}");

    nats.restart();
    assert_eq!(wait_for(&up, 200)["status"], "ready");
}
