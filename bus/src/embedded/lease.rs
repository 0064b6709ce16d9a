//! [`EmbeddedLeases`]: the embedded backend's [`LeaseStore`], a map behind a
//! mutex. The embedded backend is one process (its sled directory is
//! locked), so every replica that could race for a lease shares this map;
//! leases live as long as the process, which is also as long as any holder.
//! The rule of acquiring is `crate::lease::next`, shared with
//! `crate::nats::NatsLeases`.

use crate::lease::{check_holder, check_name, next, ttl_ms, wall_clock_ms, Next};
use crate::{Lease, LeaseError, LeaseState, LeaseStore};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// In-process leases, expiring by the wall clock.
#[derive(Debug, Default)]
pub struct EmbeddedLeases {
    leases: Mutex<HashMap<String, Lease>>,
}

impl EmbeddedLeases {
    /// A store with no leases.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map; a panic elsewhere while holding it leaves it consistent
    /// (every change is one insert or remove), so poisoning is ignored.
    fn leases(&self) -> MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl LeaseStore for EmbeddedLeases {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseState, LeaseError> {
        check_name(name)?;
        check_holder(holder)?;
        let ttl_ms = ttl_ms(ttl)?;
        let mut leases = self.leases();
        Ok(
            match next(leases.get(name), holder, ttl_ms, wall_clock_ms()) {
                Next::Keep(lease) => LeaseState {
                    lease,
                    acquired: false,
                },
                Next::Write(lease) => {
                    leases.insert(name.to_string(), lease.clone());
                    LeaseState {
                        lease,
                        acquired: true,
                    }
                }
            },
        )
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, LeaseError> {
        check_name(name)?;
        check_holder(holder)?;
        let mut leases = self.leases();
        if leases.get(name).is_some_and(|l| l.holder == holder) {
            leases.remove(name);
            return Ok(true);
        }
        Ok(false)
    }

    async fn holder(&self, name: &str) -> Result<Option<Lease>, LeaseError> {
        check_name(name)?;
        let now = wall_clock_ms();
        Ok(self
            .leases()
            .get(name)
            .filter(|l| l.is_valid_at(now))
            .cloned())
    }
}
