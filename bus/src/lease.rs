//! Leases: named locks with a holder and an expiry, renewed by their holder,
//! so that of several replicas exactly one drives a piece of work at a time
//! and another takes over within one ttl when it dies.
//!
//! [`LeaseStore`] is the trait; its providers are
//! [`crate::embedded::EmbeddedLeases`] (in-process, the embedded backend is
//! one process) and [`crate::nats::NatsLeases`] (a JetStream KV bucket with
//! compare-and-set writes), and both pass the lease checks of
//! `crate::conformance`. This file holds what they share: the types, the
//! checks of names, holders and ttls, and the pure rule `next` that says
//! whether an acquire writes.
//!
//! Expiry is by the wall clock ([`wall_clock_ms`]) of whoever reads the
//! lease: a lease written on one machine is judged by another's clock, so
//! the ttl must be much longer than the clock skew between replicas.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest lease name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// The longest holder accepted, in bytes.
pub const MAX_HOLDER_LEN: usize = 256;

/// Who holds a lease and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder's id (e.g. a replica's name).
    pub holder: String,
    /// When it expires, in milliseconds since the Unix epoch (wall clock);
    /// it is held while the clock reads less than this.
    pub expires_at_ms: u64,
}

impl Lease {
    /// Whether it is still held at `now_ms` (see [`wall_clock_ms`]).
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// How long it is still held at `now_ms` (zero once expired).
    pub fn remaining_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms))
    }
}

/// What [`LeaseStore::acquire`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease as it stands now: the caller's when `acquired`, else the
    /// current holder's.
    pub lease: Lease,
    /// Whether the caller holds it now (taken, or renewed).
    pub acquired: bool,
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A bad argument; nothing was changed.
    #[error("invalid lease {field}: {reason}")]
    Invalid {
        /// Which argument: `name`, `holder` or `ttl`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The stored value of a lease is not one (written by something else);
    /// nothing was changed.
    #[error("lease {name}: the stored value is not a lease: {reason}")]
    Corrupt {
        /// The lease's name.
        name: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The storage failed (connection, timeout, permissions).
    #[error("lease store failed: {0}")]
    Backend(String),
}

/// Named leases with a holder and an expiry.
///
/// A lease is held by at most one holder at a time: while it is valid,
/// only its holder can renew or release it; once it expired (or was
/// released, or its stored record was deleted) the next acquirer takes it.
/// Every provider refuses names that are not NATS KV keys.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease `name` for `holder` for `ttl` if it is free or
    /// expired, renews it for `ttl` from now if `holder` holds it, and
    /// otherwise leaves it; returns who holds it now and until when. Of
    /// several acquirers racing for a free lease, exactly one wins.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseState, LeaseError>;

    /// Gives up the lease if `holder` holds it (valid or expired, as long
    /// as nobody took it over), so another acquirer gets it at once; returns
    /// whether it did. A lease held by anyone else is left as it is.
    async fn release(&self, name: &str, holder: &str) -> Result<bool, LeaseError>;

    /// The lease's current holder, `None` when it is free or expired.
    async fn holder(&self, name: &str) -> Result<Option<Lease>, LeaseError>;
}

/// Milliseconds since the Unix epoch by this machine's wall clock, the
/// clock leases expire by.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What an acquire does, decided from the lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Somebody else holds a valid lease: report it, write nothing.
    Keep(Lease),
    /// Store this lease for the caller (taking or renewing).
    Write(Lease),
}

/// The rule of [`LeaseStore::acquire`], pure: `current` (the stored lease,
/// if any) is kept when another holder's is still valid at `now_ms`, else
/// replaced by the caller's, expiring `ttl_ms` from now.
pub(crate) fn next(current: Option<&Lease>, holder: &str, ttl_ms: u64, now_ms: u64) -> Next {
    match current {
        Some(lease) if lease.holder != holder && lease.is_valid_at(now_ms) => {
            Next::Keep(lease.clone())
        }
        _ => Next::Write(Lease {
            holder: holder.to_string(),
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        }),
    }
}

/// Checks that `name` is a NATS KV key: letters, digits and `-_=/.`, not
/// starting or ending with a dot nor holding two in a row (an empty subject
/// token), at most [`MAX_NAME_LEN`] bytes.
pub(crate) fn check_name(name: &str) -> Result<(), LeaseError> {
    let refuse = |reason: String| {
        Err(LeaseError::Invalid {
            field: "name",
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return refuse(format!("{} bytes, more than {MAX_NAME_LEN}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_=/.".contains(*c)))
    {
        return refuse(format!(
            "{name:?} holds {c:?}; a NATS KV key has only letters, digits and - _ = / ."
        ));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return refuse(format!(
            "{name:?}: a NATS KV key may not start or end with a dot nor hold two in a row"
        ));
    }
    Ok(())
}

/// Checks that `holder` is not empty, at most [`MAX_HOLDER_LEN`] bytes.
pub(crate) fn check_holder(holder: &str) -> Result<(), LeaseError> {
    let reason = if holder.is_empty() {
        "it is empty".to_string()
    } else if holder.len() > MAX_HOLDER_LEN {
        format!("{} bytes, more than {MAX_HOLDER_LEN}", holder.len())
    } else {
        return Ok(());
    };
    Err(LeaseError::Invalid {
        field: "holder",
        reason,
    })
}

/// `ttl` in whole milliseconds, refused below one (a lease that expires
/// as it is taken guards nothing).
pub(crate) fn ttl_ms(ttl: Duration) -> Result<u64, LeaseError> {
    match u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) {
        0 => Err(LeaseError::Invalid {
            field: "ttl",
            reason: format!("{ttl:?} is less than 1 ms"),
        }),
        ms => Ok(ms),
    }
}

/// Maps any storage failure to [`LeaseError::Backend`].
pub(crate) fn backend(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Backend(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, expires_at_ms: u64) -> Lease {
        Lease {
            holder: holder.to_string(),
            expires_at_ms,
        }
    }

    #[test]
    fn another_holders_valid_lease_is_kept_and_anything_else_is_written() {
        let a = lease("a", 1_000);
        assert_eq!(next(Some(&a), "b", 50, 999), Next::Keep(a.clone()));
        assert_eq!(
            next(Some(&a), "b", 50, 1_000),
            Next::Write(lease("b", 1_050))
        );
        assert_eq!(next(Some(&a), "a", 50, 999), Next::Write(lease("a", 1_049)));
        assert_eq!(next(None, "b", 50, 7), Next::Write(lease("b", 57)));
        assert_eq!(
            next(None, "b", u64::MAX, 7),
            Next::Write(lease("b", u64::MAX))
        );
    }

    #[test]
    fn names_follow_the_nats_kv_key_rules() {
        for good in ["study-runs", "a/b.c_d=e", "A1", &"x".repeat(MAX_NAME_LEN)] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "a b", ".a", "a.", "a..b", "a*", "a>", "ä", "a\n", &long] {
            assert!(
                matches!(
                    check_name(bad),
                    Err(LeaseError::Invalid { field: "name", .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_holders_and_ttls_under_a_millisecond_are_refused() {
        assert!(check_holder("replica-1").is_ok());
        assert!(matches!(
            check_holder(""),
            Err(LeaseError::Invalid {
                field: "holder",
                ..
            })
        ));
        assert_eq!(ttl_ms(Duration::from_secs(2)).unwrap(), 2_000);
        for bad in [Duration::ZERO, Duration::from_micros(999)] {
            assert!(matches!(
                ttl_ms(bad),
                Err(LeaseError::Invalid { field: "ttl", .. })
            ));
        }
    }

    #[test]
    fn a_lease_is_valid_before_its_expiry_only() {
        let a = lease("a", 100);
        assert!(a.is_valid_at(99) && !a.is_valid_at(100));
        assert_eq!(a.remaining_at(40), Duration::from_millis(60));
        assert_eq!(a.remaining_at(400), Duration::ZERO);
    }
}
