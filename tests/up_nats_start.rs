//! `flotilla up --nats` outlives a NATS that is not there at start (issue 11,
//! defect 1): it keeps trying with a growing pause instead of exiting, and
//! becomes ready once the server comes up.

mod common;

use common::FlotillaUp;
use flotilla_bus::testing::NatsServer;
use std::time::Duration;

/// Longer than `NatsBus::connect`'s own retries (about 7 s), after which
/// `up` used to exit.
const SERVER_DOWN_FOR: Duration = Duration::from_secs(12);

#[test]
fn up_waits_for_a_nats_server_that_starts_late() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start();
    let url = nats.url();
    nats.kill();
    let late_start = std::thread::spawn(move || {
        std::thread::sleep(SERVER_DOWN_FOR);
        nats.restart();
        nats
    });
    let mut up = FlotillaUp::start(&["--nats", &url], dir.path());
    let _nats = late_start.join().expect("the server thread");
    assert!(
        up.log().contains("NATS not usable yet"),
        "up said it was waiting:\n{}",
        up.log()
    );
    up.terminate();
}
