//! [`NatsLeases`]: the NATS backend's [`LeaseStore`], one key per lease in
//! the JetStream KV bucket [`LEASE_BUCKET`] (history 1), whose value is the
//! JSON `{"holder": …, "expires_at_ms": …}`.
//!
//! Every write is a compare-and-set on the revision just read (`update` with
//! the key's last revision, 0 for a key never written), so of replicas
//! racing on other connections or machines exactly one write lands; a loser
//! reads again and reports the winner. A deleted or purged key is free. The
//! rule of acquiring is `crate::lease::next`, shared with
//! `crate::embedded::EmbeddedLeases`.
//!
//! Expiry is judged by the wall clock of the process reading the lease, so
//! replicas assume their clocks differ by much less than the ttl: with a
//! skew of `s`, a lease may be taken over up to `s` early (or late).

use crate::lease::{backend, check_holder, check_name, next, ttl_ms, wall_clock_ms, Next};
use crate::{Lease, LeaseError, LeaseState, LeaseStore};
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::{self, stream::StorageType};
use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The KV bucket that holds leases.
pub const LEASE_BUCKET: &str = "FLOTILLA_LEASES";
/// Reads and compare-and-sets one acquire tries before giving up, each
/// lost only to a writer that then released or let its lease lapse.
const CAS_ATTEMPTS: usize = 8;

/// Leases in the KV bucket [`LEASE_BUCKET`], opened on first use.
#[derive(Debug)]
pub struct NatsLeases {
    js: jetstream::Context,
    replicas: usize,
    kv: OnceCell<kv::Store>,
}

/// A lease key as read: the lease (absent when the key is free) and the
/// revision the next write must expect.
struct Read {
    lease: Option<Lease>,
    revision: u64,
}

impl NatsLeases {
    /// Leases on `js` (e.g. [`super::JetStreamLog::jetstream`], so they
    /// share the log's connection). The bucket is got or created, with
    /// `replicas` copies, on the first call, so opening a backend does not
    /// need the bucket's permissions unless leases are used.
    pub fn new(js: jetstream::Context, replicas: usize) -> Self {
        NatsLeases {
            js,
            replicas,
            kv: OnceCell::new(),
        }
    }

    /// Like [`NatsLeases::new`], getting or creating the bucket now.
    pub async fn open(js: jetstream::Context, replicas: usize) -> Result<Self, LeaseError> {
        let leases = Self::new(js, replicas);
        leases.kv().await?;
        Ok(leases)
    }

    /// The bucket, got or created on first use (a failure is tried again
    /// next time). An existing bucket is used as it is.
    async fn kv(&self) -> Result<&kv::Store, LeaseError> {
        self.kv
            .get_or_try_init(|| async {
                if let Ok(store) = self.js.get_key_value(LEASE_BUCKET).await {
                    return Ok(store);
                }
                self.js
                    .create_key_value(kv::Config {
                        bucket: LEASE_BUCKET.to_string(),
                        history: 1,
                        storage: StorageType::File,
                        num_replicas: self.replicas.max(1),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| backend(format!("cannot open the bucket {LEASE_BUCKET}: {e}")))
            })
            .await
    }

    /// The lease stored at `name` and its revision.
    async fn read(&self, name: &str) -> Result<Read, LeaseError> {
        let entry = self.kv().await?.entry(name).await.map_err(backend)?;
        Ok(match entry {
            None => Read {
                lease: None,
                revision: 0,
            },
            Some(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => Read {
                lease: None,
                revision: e.revision,
            },
            Some(e) => Read {
                lease: Some(decode(name, &e.value)?),
                revision: e.revision,
            },
        })
    }
}

fn decode(name: &str, value: &[u8]) -> Result<Lease, LeaseError> {
    serde_json::from_slice(value).map_err(|e| LeaseError::Corrupt {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

fn encode(lease: &Lease) -> bytes::Bytes {
    serde_json::to_vec(lease)
        .expect("a lease serializes")
        .into()
}

#[async_trait]
impl LeaseStore for NatsLeases {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseState, LeaseError> {
        check_name(name)?;
        check_holder(holder)?;
        let ttl_ms = ttl_ms(ttl)?;
        let kv = self.kv().await?;
        for _ in 0..CAS_ATTEMPTS {
            let read = self.read(name).await?;
            let lease = match next(read.lease.as_ref(), holder, ttl_ms, wall_clock_ms()) {
                Next::Keep(lease) => {
                    return Ok(LeaseState {
                        lease,
                        acquired: false,
                    })
                }
                Next::Write(lease) => lease,
            };
            match kv.update(name, encode(&lease), read.revision).await {
                Ok(_) => {
                    return Ok(LeaseState {
                        lease,
                        acquired: true,
                    })
                }
                // Another writer got in since the read: read the winner.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(backend(e)),
            }
        }
        Err(LeaseError::Backend(format!(
            "lease {name}: {CAS_ATTEMPTS} compare-and-set writes in a row lost to writers that let go at once"
        )))
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, LeaseError> {
        check_name(name)?;
        check_holder(holder)?;
        let read = self.read(name).await?;
        if read.lease.is_none_or(|l| l.holder != holder) {
            return Ok(false);
        }
        // Expecting the revision read: a takeover since then is kept.
        match self
            .kv()
            .await?
            .delete_expect_revision(name, Some(read.revision))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn holder(&self, name: &str) -> Result<Option<Lease>, LeaseError> {
        check_name(name)?;
        let now = wall_clock_ms();
        Ok(self.read(name).await?.lease.filter(|l| l.is_valid_at(now)))
    }
}
