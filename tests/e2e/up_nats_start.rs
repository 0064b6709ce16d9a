//! `flotilla up --nats` outlives a NATS that is not there at start (issue 11,
//! defect 1): it keeps trying with a growing pause instead of exiting,
//! answers `/readyz` with 503 (and `/healthz` with 200) meanwhile, and
//! becomes ready once the server comes up.

use crate::support::{flotilla_bin, free_port, http_client};
use flotilla_bus::testing::NatsServer;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than `NatsBus::connect`'s own retries (about 7 s), after which
/// `up` used to exit.
const SERVER_DOWN_FOR: Duration = Duration::from_secs(12);
/// How long `up` may take to be ready once the server is back.
const READY_WITHIN: Duration = Duration::from_secs(40);

/// `flotilla up`, killed (by its own pid) on drop.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status of `GET <base><path>`, or `None` while nothing answers.
fn status(base: &str, path: &str) -> Option<u16> {
    let reply = http_client().get(format!("{base}{path}")).send().ok()?;
    Some(reply.status().as_u16())
}

/// `/readyz`'s status, or `None` while nothing answers.
fn readyz(base: &str) -> Option<u16> {
    status(base, "/readyz")
}

#[test]
fn up_waits_for_a_nats_server_that_starts_late() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start();
    nats.kill();
    let http = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let child = Command::new(flotilla_bin())
        .args(["up", "--http", &http, "--nats", &nats.url()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn flotilla up");
    let mut up = Up(child);
    let base = format!("http://{http}");
    let started = Instant::now();
    let mut answered = Vec::new();
    let mut alive = Vec::new();
    while started.elapsed() < SERVER_DOWN_FOR {
        assert!(
            up.0.try_wait().unwrap().is_none(),
            "up exited while NATS was down:\n{}",
            std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
        );
        answered.extend(readyz(&base));
        alive.extend(status(&base, "/healthz"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!answered.is_empty(), "the gateway answered while waiting");
    assert!(
        answered.iter().all(|s| *s == 503),
        "not ready: {answered:?}"
    );
    // Alive while it waits: a liveness probe must not restart it.
    assert!(
        !alive.is_empty() && alive.iter().all(|s| *s == 200),
        "alive: {alive:?}"
    );
    nats.restart();
    let back = Instant::now();
    while readyz(&base) != Some(200) {
        assert!(
            back.elapsed() < READY_WITHIN,
            "not ready after NATS came back:\n{}",
            std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
