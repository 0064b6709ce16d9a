//! The scheduler actor: runs jobs (a study's trials, a tuning session's
//! workers) on an executor, durably.
//!
//! - `queue`: the pure [`Queue`] aggregate — jobs, attempts, retries with
//!   backoff, the concurrency limit and priorities;
//! - `allowlist`: [`AllowedCommands`], the programs the local executor may
//!   run (`scheduler.local.allowed_commands`), the queue's host settings;
//! - `executor`: the [`Executor`] trait every place that runs attempts
//!   implements; `local`: subprocesses; `process`: what subprocess
//!   runners share, here and in `flotilla run` (starting a command in its
//!   own process group, waiting with a deadline and stopping the group,
//!   wording its end, result parsing, knowing a process again after a
//!   restart);
//! - `kubernetes`: Jobs through kube-rs, watched, adopted by label;
//! - `manifests`: Job manifests as PyYAML-compatible YAML, and the API
//!   server's checks for quantities and names;
//! - `placement`: the pure rules of placement — which nodes of a pool are
//!   ready, when a node's attempts are lost with it, [`choose_node`];
//!   `nodes`: the [`NodeDirectory`] that folds the provisioner's pools from
//!   the event log and the [`NodeWatch`] that reacts to lost nodes;
//! - `host`: the effects (place, start, adopt, stop attempts; wake
//!   retries), the queue signals for the provisioner, and the metrics;
//! - `conformance` (tests and the `test-util` feature only): the cases
//!   every executor passes, run against all three.
//!
//! The wire types live in `flotilla_messages::scheduler`.

#![warn(missing_docs)]

mod allowlist;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod executor;
mod host;
mod kubernetes;
mod local;
mod manifests;
mod nodes;
mod placement;
mod process;
mod queue;

pub use allowlist::{AllowedCommands, AllowlistError, ALLOWED_COMMANDS_SETTING};
pub use executor::{Attempt, Executor, Launch, NODE_ENV};
pub use host::{node_lost_command_id, QueueSignals, SchedulerEffects, SchedulerMetrics};
pub use kubernetes::{job_manifest, job_name, KubernetesExecutor, ATTEMPT_KEY_LABEL};
pub use local::LocalExecutor;
pub use manifests::{check_dns1123_subdomain, to_yaml, ManifestsExecutor};
pub use nodes::{NodeDirectory, NodeWatch, NodeWatchError};
pub use placement::{choose_node, is_ready, loss_by, loss_reason, ready_nodes, NodeLoss};
pub use process::{
    exit_reason, group_command, group_leader, parse_result, signal_group, stderr_detail,
    stop_group, wait_or_stop, ProcessIdentity,
};
pub use queue::{AttemptRecord, AttemptStatus, Depth, JobRecord, JobStatus, Queue, ATTEMPTS_KEPT};
