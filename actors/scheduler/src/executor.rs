//! The executor contract: how the scheduler's effects start, adopt and stop
//! an attempt, whatever runs it (a local process, a Kubernetes Job).
//!
//! An executor must be idempotent per attempt: the host may ask it to
//! launch the same attempt again after a restart (the dispatch event's
//! effect is re-driven when its outcome was never recorded). It then adopts
//! what it finds — a live process, a Job with the attempt's labels, the
//! exit status an unwatched process left — instead of starting a second
//! one, so an attempt never runs twice at once.

use async_trait::async_trait;
use flotilla_messages::scheduler::{ExecutorHandle, ExecutorKind, JobSpec, Outcome};
use futures::future::BoxFuture;
use std::time::Duration;

/// The variable that tells a placed attempt its node's id.
pub const NODE_ENV: &str = "FLOTILLA_NODE";

/// One attempt of one job, as the dispatch event describes it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The queue (the aggregate id).
    pub queue: String,
    /// The job.
    pub job_id: String,
    /// The attempt number (1, 2, ...).
    pub attempt: u32,
    /// What to run.
    pub spec: JobSpec,
    /// The dispatch event's id (the placement event's, for a placed
    /// attempt): a label unique to this attempt, carried by its process or
    /// Job so a restarted scheduler can find it.
    pub key: String,
    /// The node of the queue's pool it was placed on, if it was
    /// (`FLOTILLA_NODE` in its environment).
    pub node: Option<String>,
}

/// What launching an attempt gave.
pub enum Launch {
    /// It runs (started now, or adopted): where, and its end.
    Running {
        /// Where it runs.
        handle: ExecutorHandle,
        /// Whether it was found running rather than started.
        adopted: bool,
        /// Resolves when it ends.
        end: BoxFuture<'static, Outcome>,
    },
    /// It could not start, or it had ended already while nobody watched.
    Ended(Outcome),
}

/// Runs attempts somewhere.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Which kind this is.
    fn kind(&self) -> ExecutorKind;

    /// Starts `attempt`, or adopts it if it already runs.
    async fn launch(&self, attempt: &Attempt) -> Launch;

    /// Stops attempt `attempt` of `job_id` in `queue` if it runs (SIGTERM
    /// or delete, `grace` to finish, then kill).
    async fn stop(&self, queue: &str, job_id: &str, attempt: u32, grace: Duration);
}
