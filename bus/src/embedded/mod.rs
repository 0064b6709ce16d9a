//! The embedded backend: everything in one process, nothing to install.
//!
//! [`EmbeddedBus`] routes messages between tasks with NATS semantics (the
//! same wildcard matching, queue groups and no-responders rule), so actors
//! cannot tell it from a NATS server. [`SledLog`] keeps the event log in a
//! sled database under the data dir; every append is flushed before it
//! returns, and concurrent appends share one flush (group commit).
//! [`EmbeddedLeases`] keeps leases in memory: one process, one map.

mod lease;
mod router;
mod sled_log;

pub use lease::EmbeddedLeases;
pub use router::EmbeddedBus;
pub use sled_log::SledLog;
#[cfg(feature = "test-util")]
pub use sled_log::{corrupt_event_for_test, purge_stream_for_test};
