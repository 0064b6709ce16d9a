//! The wall clock as the actors read it: unix milliseconds.
//!
//! Aggregates never read a clock (see [`crate::Aggregate`]); the hosts,
//! effects and services that feed them do, and stamp their commands with
//! this. A [`Clock`] is passed where a test or a simulation wants to set
//! the time itself.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A clock: unix milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock as a [`Clock`].
pub fn wall_clock() -> Clock {
    Arc::new(unix_millis)
}

/// Unix milliseconds now: 0 before the epoch, `u64::MAX` past its range.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
