//! A cluster's comma-separated server list (`nats://a:4222,nats://b:4222`)
//! connects, whichever of its servers is up (one refusing connections, one
//! whose name does not resolve): async-nats reads a string as one server,
//! so the list is split before connecting.

use flotilla_bus::nats::NatsBus;
use flotilla_bus::testing::NatsServer;
use flotilla_bus::{Bus, Message};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_server_list_connects_to_the_one_that_is_up() {
    let server = NatsServer::start();
    let down = format!("nats://127.0.0.1:{}", closed_port());
    // A name that does not resolve: what Docker's DNS answers for a
    // stopped container of a Compose cluster.
    let unknown = "nats://no-such-node.invalid:4222";
    for list in [
        format!("{down},{}", server.url()),
        format!("{}, {down}", server.url()),
        format!("{unknown},{}", server.url()),
    ] {
        let bus = NatsBus::connect(&list)
            .await
            .unwrap_or_else(|e| panic!("{list}: {e}"));
        bus.publish(Message::new("flotilla.test", b"{}".to_vec()))
            .await
            .unwrap();
        bus.flush().await.unwrap();
    }
}
