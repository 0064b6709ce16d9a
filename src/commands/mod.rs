//! One module per subcommand.

pub mod agent;
pub mod audit;
pub mod bench;
pub mod bench_inference;
pub mod events;
pub mod model;
pub mod plan;
pub mod pools;
pub mod replay;
pub mod run;
pub mod scheduler;
pub mod scheduler_run;
pub mod send;
pub mod study;
pub mod up;
pub mod worker;

use anyhow::Result;

/// Runs `fut` on a fresh single-threaded tokio runtime (for the commands
/// that do not host actors).
pub fn block_on<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}
