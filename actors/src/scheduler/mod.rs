//! The scheduler actor: runs jobs (a study's trials, a tuning session's
//! workers) on an executor, durably.
//!
//! - [`queue`]: the pure [`Queue`] aggregate — jobs, attempts, retries with
//!   backoff, the concurrency limit and priorities;
//!
//! The wire types live in `flotilla_messages::scheduler`.

pub mod queue;

pub use queue::{Depth, JobRecord, JobStatus, Queue};
