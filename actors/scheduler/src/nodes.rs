//! Where the scheduler learns a pool's nodes, and how it hears that one is
//! lost: the I/O around [`crate::placement`].
//!
//! [`NodeDirectory`] folds the provisioner's pool aggregate
//! (`flotilla_provisioner::Pool`) from the event log, stream
//! `provisioner/<pool>`, read on demand from where it last stopped. The
//! log, not a query, is the source: it is the same in one `flotilla up`
//! (embedded sled) and across processes (the JetStream stream every
//! process shares), it answers while the provisioner itself is down, and
//! it is verified as it is read. A pool the log has no event of is no
//! provisioner pool: that queue's attempts run unplaced, as before
//! placement existed.
//!
//! Every event that makes a node lost ([`crate::placement::loss_by`]) is
//! handed, with its event id, to [`NodeWatch`], whichever reader folded it.
//! The watch follows `<prefix>.evt.provisioner.>` on the bus (and reads
//! every known pool again every [`REFRESH_EVERY`], in case a message was
//! missed) and asks the scheduler's effects to send `node_lost` to the
//! queues that run attempts on that node (see
//! [`crate::SchedulerEffects::node_lost`]).

use crate::placement::{loss_by, loss_reason, ready_nodes, NodeLoss};
use crate::SchedulerEffects;
use flotilla_bus::{Bus, BusError, EventLog, LogError};
use flotilla_host::Aggregate;
use flotilla_messages::envelope::IntegrityError;
use flotilla_messages::provisioner::ProvisionerEvent;
use flotilla_messages::{Actor, StreamName, Subjects};
use flotilla_provisioner::Pool;
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the watch reads every known pool again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A pool as far as the directory has read it.
#[derive(Default)]
struct Known {
    pool: Pool,
    seq: u64,
}

/// The provisioner's pools as the event log holds them.
pub struct NodeDirectory {
    log: Arc<dyn EventLog>,
    pools: tokio::sync::Mutex<BTreeMap<String, Known>>,
    version: watch::Sender<u64>,
    losses: mpsc::UnboundedSender<NodeLoss>,
    lost: Mutex<Option<mpsc::UnboundedReceiver<NodeLoss>>>,
}

impl NodeDirectory {
    /// A directory reading `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Arc<Self> {
        let (losses, lost) = mpsc::unbounded_channel();
        Arc::new(NodeDirectory {
            log,
            pools: tokio::sync::Mutex::new(BTreeMap::new()),
            version: watch::channel(0).0,
            losses,
            lost: Mutex::new(Some(lost)),
        })
    }

    /// A receiver that changes whenever a pool's nodes may have changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The losses the directory reads, for the one [`NodeWatch`] (`None`
    /// once taken).
    fn take_losses(&self) -> Option<mpsc::UnboundedReceiver<NodeLoss>> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Reads `pool` up to the log's end, then runs `read` on its state
    /// (`None`: the provisioner has no such pool).
    async fn with_pool<T>(
        &self,
        pool: &str,
        read: impl FnOnce(Option<&Pool>) -> T,
    ) -> Result<T, LogError> {
        let Ok(stream) = StreamName::new(Actor::Provisioner, pool) else {
            // A pool label that is no aggregate id names no provisioner pool.
            return Ok(read(None));
        };
        let mut pools = self.pools.lock().await;
        let known = pools.entry(pool.to_string()).or_default();
        let advanced = self.catch_up(&stream.to_string(), known).await?;
        if advanced {
            self.version.send_modify(|v| *v += 1);
        }
        Ok(read(known.pool.state().map(|_| &known.pool)))
    }

    /// Folds the events after what `known` holds; hands on the losses.
    async fn catch_up(&self, stream: &str, known: &mut Known) -> Result<bool, LogError> {
        let mut events = self.log.read_stream(stream, known.seq + 1).await?;
        let mut advanced = false;
        while let Some(env) = events.try_next().await? {
            let event: ProvisionerEvent = env.payload.decode().map_err(|e| {
                LogError::Corrupt(IntegrityError::Unreadable {
                    stream: stream.to_string(),
                    seq: env.seq,
                    reason: format!("payload is not a provisioner event: {e}"),
                })
            })?;
            let node = |pool: &Pool| event.node_id().and_then(|id| pool.node(id)).cloned();
            let before = node(&known.pool);
            known.pool = std::mem::take(&mut known.pool).evolve(&event);
            let after = node(&known.pool);
            known.seq = env.seq;
            advanced = true;
            if let Some(loss) = loss_by(&env.id, &event, before.as_ref(), after.as_ref()) {
                tracing::info!(node = %loss.node, reason = %loss.reason, "node lost: its attempts run again elsewhere");
                // No watch (a directory used alone): nobody to tell.
                let _ = self.losses.send(loss);
            }
        }
        Ok(advanced)
    }

    /// The ids of `pool`'s ready nodes, sorted; `None` when the
    /// provisioner has no such pool.
    pub async fn ready(&self, pool: &str) -> Result<Option<Vec<String>>, LogError> {
        self.with_pool(pool, |p| p.and_then(Pool::state).map(ready_nodes))
            .await
    }

    /// Why what runs on `node` of `pool` is lost, if it is.
    pub async fn loss(&self, pool: &str, node: &str) -> Result<Option<String>, LogError> {
        self.with_pool(pool, |p| p.and_then(|p| p.node(node)).and_then(loss_reason))
            .await
    }

    /// Reads every pool the directory knows up to the log's end.
    pub async fn refresh_all(&self) {
        let known: Vec<String> = self.pools.lock().await.keys().cloned().collect();
        for pool in known {
            self.refresh(&pool).await;
        }
    }

    /// Reads `pool` up to the log's end (a failed read is logged; the next
    /// one continues from the same place).
    pub async fn refresh(&self, pool: &str) {
        if let Err(e) = self.with_pool(pool, |_| ()).await {
            tracing::warn!(pool, error = %e, "cannot read the provisioner's pool");
        }
    }
}

/// Why a [`NodeWatch`] did not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeWatchError {
    /// The subscription failed.
    #[error("cannot follow the provisioner's events: {0}")]
    Bus(#[from] BusError),
    /// Another watch follows this directory's losses already.
    #[error("the node directory's losses are followed by another watch")]
    AlreadyWatched,
}

/// Follows the provisioner's events and turns each lost node into
/// `node_lost` commands for the queues running attempts there.
pub struct NodeWatch;

impl NodeWatch {
    /// Subscribes to `<prefix>.evt.provisioner.>` and reacts until aborted
    /// (must run inside an actix system). The directory's losses go to
    /// this watch only: a second one on the same directory is refused.
    pub async fn start(
        directory: Arc<NodeDirectory>,
        effects: Arc<SchedulerEffects>,
        bus: Arc<dyn Bus>,
        subjects: &Subjects,
    ) -> Result<tokio::task::JoinHandle<()>, NodeWatchError> {
        let mut losses = directory
            .take_losses()
            .ok_or(NodeWatchError::AlreadyWatched)?;
        let pattern = format!("{}.evt.{}.>", subjects.prefix(), Actor::Provisioner);
        let mut events = bus.subscribe(&pattern).await?;
        Ok(actix::spawn(async move {
            let mut every = tokio::time::interval(REFRESH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    msg = events.next() => {
                        let Some(msg) = msg else { return };
                        if let Some(pool) = msg.subject.rsplit('.').next() {
                            directory.refresh(pool).await;
                        }
                    }
                    Some(loss) = losses.recv() => effects.node_lost(&loss).await,
                    _ = every.tick() => directory.refresh_all().await,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_bus::embedded::{EmbeddedBus, SledLog};
    use flotilla_host::{AggregateCore, HostConfig, HostDeps, HostMetrics};
    use flotilla_messages::fleet::PoolConfig;
    use flotilla_messages::health::{HealthAction, Verdict};
    use flotilla_messages::provisioner::ProvisionerCommand;
    use flotilla_messages::CommandRequest;

    fn config() -> PoolConfig {
        serde_json::from_value(serde_json::json!({
            "name": "gpu", "provider": "sim",
            "scaling": {"min_nodes": 2, "max_nodes": 3, "cooldown_period": "0s"},
            "health": {"unhealthy_threshold": 1, "boot_grace": "0s", "auto_replace": true},
        }))
        .expect("a pool")
    }

    /// The provisioner's pool `gpu`, hosted on `deps` as the provisioner does.
    async fn provisioner(deps: &HostDeps) -> AggregateCore<Pool> {
        let stream = StreamName::new(Actor::Provisioner, "gpu").unwrap();
        AggregateCore::recover(stream, deps.clone()).await.unwrap()
    }

    async fn record(pool: &mut AggregateCore<Pool>, commands: Vec<ProvisionerCommand>) {
        for c in commands {
            let value = serde_json::to_value(&c).unwrap();
            let request = CommandRequest::from_value(value, None).unwrap();
            let (reply, _) = pool.execute(request, None).await;
            assert!(reply.ok, "{:?}", reply.error);
        }
    }

    fn register(node: &str) -> Vec<ProvisionerCommand> {
        vec![
            ProvisionerCommand::NodeProvisioned {
                node_id: node.into(),
                instance_id: format!("i-{node}"),
                registered: false,
                now: 2,
            },
            ProvisionerCommand::RegisterNode {
                node_id: node.into(),
                now: 2,
            },
        ]
    }

    #[tokio::test]
    async fn the_directory_reads_the_pools_nodes_and_hands_on_each_loss_once() {
        let dir = tempfile::tempdir().unwrap();
        let deps = HostDeps {
            log: Arc::new(SledLog::open(dir.path()).unwrap()),
            bus: Arc::new(EmbeddedBus::new()),
            config: Arc::new(HostConfig::default()),
            metrics: HostMetrics::unregistered(),
        };
        let directory = NodeDirectory::new(deps.log.clone());
        let mut losses = directory.take_losses().unwrap();
        assert_eq!(directory.ready("gpu").await.unwrap(), None, "no pool yet");
        assert_eq!(directory.ready("not.an.id").await.unwrap(), None);

        let mut pool = provisioner(&deps).await;
        let apply = ProvisionerCommand::ApplyPool {
            config: Box::new(config()),
            now: 1,
        };
        record(&mut pool, vec![apply]).await;
        let mut changes = directory.changes();
        let none: Vec<String> = vec![];
        assert_eq!(
            directory.ready("gpu").await.unwrap(),
            Some(none),
            "requested, none up"
        );
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        record(&mut pool, [register("gpu-1"), register("gpu-2")].concat()).await;
        let both = vec!["gpu-1".to_string(), "gpu-2".to_string()];
        assert_eq!(directory.ready("gpu").await.unwrap(), Some(both));
        assert!(changes.has_changed().unwrap());
        let xid = ProvisionerCommand::ReportHealth {
            node_id: "gpu-1".into(),
            now: 3,
            verdict: Verdict::Unhealthy,
            action: HealthAction::Replace,
            reasons: vec!["xid_replace:xid_79".into()],
        };
        record(&mut pool, vec![xid]).await;
        assert_eq!(
            directory.loss("gpu", "gpu-1").await.unwrap().as_deref(),
            Some("node gpu-1 failed (xid_replace:xid_79)")
        );
        assert_eq!(directory.loss("gpu", "gpu-2").await.unwrap(), None);
        assert_eq!(directory.loss("gpu", "gpu-9").await.unwrap(), None);
        let ready = directory.ready("gpu").await.unwrap().unwrap();
        assert_eq!(ready, ["gpu-2"]);
        let loss = losses.try_recv().expect("one loss");
        assert_eq!(loss.node, "gpu-1");
        let stored: Vec<_> = deps
            .log
            .read_stream("provisioner/gpu", 1)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let by = stored
            .iter()
            .find(|e| e.id == loss.event_id)
            .expect("a stored event");
        assert_eq!(by.event_type, "node_cordoned");
        directory.refresh_all().await;
        assert!(
            losses.try_recv().is_err(),
            "read again, nothing is lost twice"
        );
        assert!(directory.take_losses().is_none(), "one watch only");
    }
}
