//! Test harness: a real `nats-server` (with JetStream) as a child process,
//! for the bus conformance tests (`bus/tests/conformance_nats.rs`) and the
//! root package's end-to-end tests.
//!
//! [`NatsServer`] is [`server::NatsServer`] whose start and restart panic
//! with the reason (and, when no binary is found, how to install one), as a
//! failed test set-up should.

use crate::nats::server;
use std::ops::{Deref, DerefMut};

/// A running `nats-server -js` child process; killed on drop. Everything
/// but [`NatsServer::start`] and [`NatsServer::restart`] comes from
/// [`server::NatsServer`].
pub struct NatsServer(server::NatsServer);

impl NatsServer {
    /// Starts a server (see [`server::NatsServer::start`]); panics when it
    /// does not come up.
    pub fn start() -> NatsServer {
        NatsServer(server::NatsServer::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a server with `extra_args` (see
    /// [`server::NatsServer::start_with_args`]); panics when it does not come up.
    pub fn start_with_args(extra_args: &[&str]) -> NatsServer {
        NatsServer(
            server::NatsServer::start_with_args(extra_args).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Restarts it on the same port and store (see
    /// [`server::NatsServer::restart`]); panics when it does not come up.
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Deref for NatsServer {
    type Target = server::NatsServer;
    fn deref(&self) -> &server::NatsServer {
        &self.0
    }
}

impl DerefMut for NatsServer {
    fn deref_mut(&mut self) -> &mut server::NatsServer {
        &mut self.0
    }
}
